#!/usr/bin/env bash
# Set up and run Dockyard with its embedded defaults (SQLite state under ~/.dockyard).
# Usage: bash scripts/run.sh [dockyard server options...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dockyard server "$@"
