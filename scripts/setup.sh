#!/usr/bin/env bash
# Installs everything the project needs into ./.venv (idempotent). Used by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras=${1:-}
stamp=".venv/.installed${extras:+-$extras}"
# (again when pyproject.toml, setup.py or the C accelerator's sources changed since)
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
   || [ -n "$(find src -name '*.[ch]' -newer "$stamp" -print -quit)" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if [ -n "$extras" ]; then
    .venv/bin/python -m pip install -q -e ".[$extras]"
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
fi
# The official device SDK needs paho-mqtt<2, which must not meet our own dependencies:
# it gets an interpreter of its own, used by the tests as a separate process.
if [ "$extras" = "test" ]; then
  if [ ! -f .venv-linkkit/.installed ]; then
    "$PY" -m venv .venv-linkkit
    .venv-linkkit/bin/python -m pip install -q "aliyun-iot-linkkit>=1.2" "paho-mqtt<2"
    touch .venv-linkkit/.installed
  fi
  # Debian's ffmpeg for the media interop tests (without it they fall back to PyAV).
  if ! command -v ffmpeg >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null) \
        || echo "warning: could not install ffmpeg; media interop tests fall back to PyAV" >&2
    else
      echo "warning: ffmpeg not found and not root; media interop tests fall back to PyAV" >&2
    fi
  fi
  # Debian's chromium for the console browser test (Playwright drives /usr/bin/chromium;
  # its own browser download does not work here and is never used).
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; the console browser test will be skipped (fails under CI)" >&2
    else
      echo "warning: chromium not found and not root; the console browser test will be skipped (fails under CI)" >&2
    fi
  fi
fi
