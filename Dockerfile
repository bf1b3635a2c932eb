# The Sluice gateway image: `make image` builds it (README.md, "Container image").
#
#   docker build -t sluice .                                    # every feature ([all])
#   docker build --build-arg EXTRAS=chdb -t sluice:lean .       # gateway + embedded ClickHouse only
#   docker build --build-arg BAKE_EMBEDDINGS=true \
#                --build-arg SPACY_MODEL=https://github.com/explosion/spacy-models/releases/download/en_core_web_sm-3.8.0/en_core_web_sm-3.8.0-py3-none-any.whl \
#                -t sluice:offline .                            # no model download at run time
#
# Runs as uid/gid 10001 with a read-only root filesystem: the only writable paths it needs
# are $SLUICE_DATA_DIR (/var/lib/sluice) and /tmp (mount volumes there). No secret is baked
# in: keys come from the environment (`${ENV}` in sluice.yaml).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# pip extras of sluice-gateway ("all", "chdb", "chdb,embeddings", or "" for the bare gateway).
ARG EXTRAS=all
# torch's CPU wheels (the default PyPI wheel pulls CUDA, gigabytes the gateway never uses).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=
# true: export the local embedding model to ONNX now (cache/onnx_export.py), not at first start.
ARG BAKE_EMBEDDINGS=false
# A pip requirement for a spaCy model (name, URL or wheel), for PII guardrails with NER.
ARG SPACY_MODEL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/sluice/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone (empty package stubs, an empty README): a
# source or README change rebuilds only the layers below, not every wheel. torch goes first
# and pinned, as in the Makefile: an unpinned resolve pulls the CUDA build.
COPY pyproject.toml ./
RUN set -eu; \
    touch README.md; \
    for pkg in gateway telemetry cache guardrails monitoring dashboards; do mkdir -p "$pkg"; touch "$pkg/__init__.py"; done; \
    spec=/src; if [ -n "${EXTRAS}" ]; then spec="/src[${EXTRAS}]"; fi; \
    case ",${EXTRAS}," in *,all,*|*,toxicity,*) /opt/sluice/venv/bin/pip install torch==2.13.0 ;; esac; \
    /opt/sluice/venv/bin/pip install "$spec"; \
    if [ -n "${SPACY_MODEL}" ]; then /opt/sluice/venv/bin/pip install "${SPACY_MODEL}"; fi; \
    rm -rf /src/gateway /src/telemetry /src/cache /src/guardrails /src/monitoring /src/dashboards /src/build /src/*.egg-info
COPY README.md ./
COPY gateway ./gateway
COPY telemetry ./telemetry
COPY cache ./cache
COPY guardrails ./guardrails
COPY monitoring ./monitoring
COPY dashboards ./dashboards
RUN set -eu; \
    /opt/sluice/venv/bin/pip install --no-deps --force-reinstall /src; \
    if [ "${BAKE_EMBEDDINGS}" = "true" ]; then \
        cd /opt/sluice && /opt/sluice/venv/bin/python -m cache.onnx_export /opt/sluice; \
        chmod -R a+rX /opt/sluice/models; fi; \
    find /opt/sluice/venv -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE}
ARG UID=10001
RUN set -eu; \
    groupadd --system --gid "${UID}" sluice; \
    useradd --system --uid "${UID}" --gid "${UID}" --home-dir /var/lib/sluice --no-create-home \
            --shell /usr/sbin/nologin sluice; \
    mkdir -p /var/lib/sluice /etc/sluice; chown "${UID}:${UID}" /var/lib/sluice
COPY --from=build /opt/sluice /opt/sluice
COPY deploy/docker-entrypoint.sh /opt/sluice/bin/docker-entrypoint.sh
# Nothing is fetched at run time: the Hugging Face and tldextract clients stay offline.
ENV PATH=/opt/sluice/venv/bin:/usr/local/bin:/usr/bin:/bin \
    SLUICE_DATA_DIR=/var/lib/sluice \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS=""
USER ${UID}:${UID}
WORKDIR /var/lib/sluice
EXPOSE 8080
ENTRYPOINT ["/opt/sluice/bin/docker-entrypoint.sh"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
