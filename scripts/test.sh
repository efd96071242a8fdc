#!/usr/bin/env bash
# Install everything the tests need into ./.venv, then run the quality gate: ruff, mypy, pytest.
# The tests start their own servers (mock upstream, gateway) on loopback ports and stop them by PID.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="test" source scripts/venv.sh
# The Redis tests start their own redis-server on a free loopback port (Debian's package may also
# start a system service on install; the tests do not use it).
command -v redis-server >/dev/null || apt_install redis-server

.venv/bin/ruff check gateway tests load_tests scripts
.venv/bin/ruff format --check gateway tests load_tests scripts
.venv/bin/mypy

status=0
# Two processes, whole modules each (module fixtures stay in one process): the suite waits on servers and
# timers as much as it computes, so this halves its time on 2 cores.
.venv/bin/pytest -q -n 2 --dist loadfile "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "FAILED: pytest collected no tests" >&2
fi
exit "$status"
