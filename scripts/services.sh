#!/usr/bin/env bash
# Makes sure the local services the production-path tests use are up (PostgreSQL).
# The embedded defaults need none of them; this only serves the test suite.
set -uo pipefail
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || echo "warning: PostgreSQL is not reachable on 127.0.0.1:5432; its tests will be skipped" >&2
exit 0
