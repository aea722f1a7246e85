#!/usr/bin/env bash
# Set up and run Dockyard with its embedded defaults: the server (SQLite state under ~/.dockyard)
# and a local agent on this machine's Docker, registered to cluster "default".
# Usage: bash scripts/run.sh [dockyard up options...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/docker.sh
exec .venv/bin/dockyard up "$@"
