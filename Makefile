# Two commands on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
# torch first, pinned: the CPU build is what detoxify needs; an unpinned resolve pulls CUDA.
TORCH  := torch==2.13.0

.PHONY: run test bench soak fuzz clean

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

run: $(VENV)/.run-deps
	$(BIN)/sluice serve --host $(HOST) --port $(PORT)

test: $(VENV)/.test-deps $(NODE_DEPS) $(INSTRUCTOR_DEPS)
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
