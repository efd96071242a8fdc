#!/usr/bin/env bash
# Install the gateway into ./.venv and start it on embedded defaults with the mock upstream (no servers needed).
# Extra arguments go to `gateway serve --demo` (for example --port 9090).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="" source scripts/venv.sh
exec .venv/bin/gateway serve --demo "$@"
