#!/bin/sh
# The image's entrypoint: `sluice <args>`, after pointing the data directory at the model
# exports baked into the image (BAKE_EMBEDDINGS). The data directory is usually a fresh
# volume (an emptyDir in the Helm chart) that hides whatever the image had there; links keep
# the baked files read-only in the image and the directory itself writable.
set -eu
data="${SLUICE_DATA_DIR:-/var/lib/sluice}"
if [ -d /opt/sluice/models ] && [ -w "$data" ]; then
    mkdir -p "$data/models"
    for model in /opt/sluice/models/*/; do
        [ -d "$model" ] || continue
        name="$(basename "$model")"
        [ -e "$data/models/$name" ] || ln -s "${model%/}" "$data/models/$name"
    done
fi
exec sluice "$@"
