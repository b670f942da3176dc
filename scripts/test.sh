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
# The whole suite ran with the C accelerator (when it built); the media path once more in pure
# Python, so that the fallback stays right (docs/media.md, "The C accelerator").
if [ "$rc" -eq 0 ] && [ "$#" -eq 0 ] && .venv/bin/python -c "from iotvideo.media import accel; assert accel.native"; then
  echo "media tests again with IOTVIDEO_NATIVE=0 (the pure-Python path):"
  IOTVIDEO_NATIVE=0 .venv/bin/python -m pytest tests/test_hub.py tests/test_rtmp_protocol.py tests/test_media_servers.py
  rc=$?
fi
set -e
if [ "$rc" -eq 5 ]; then echo "no tests were collected"; exit 1; fi
exit "$rc"
