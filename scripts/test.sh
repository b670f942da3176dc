#!/usr/bin/env bash
# Installs the project with its test dependencies into ./.venv and runs the whole test
# suite: against SQLite and against the PostgreSQL server on this machine's loopback.
# Extra arguments go to pytest.  This is the command .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/services.sh
export IOTVIDEO_TEST_PG_ADMIN_URL=${IOTVIDEO_TEST_PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
unset HTTP_PROXY http_proxy HTTPS_PROXY https_proxy
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "no tests were collected"; exit 1; fi
exit "$rc"
