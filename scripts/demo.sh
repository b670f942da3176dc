#!/usr/bin/env bash
# Installs the project into ./.venv and starts a server with a demo tenant, AccessKey,
# product and device in ./demo-data, printing the endpoint and credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/iotvideo demo --data-dir "${IOTVIDEO_DATA_DIR:-./demo-data}" "$@"
