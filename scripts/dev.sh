#!/usr/bin/env bash
# Set up (first run only) and start the whole stack on this machine: broker, ClickHouse,
# migrations, worker and API. Extra arguments go to `forum-analytics dev` (e.g. --simulate).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/forum-analytics dev "$@"
