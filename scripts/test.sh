#!/usr/bin/env bash
# Set up and run the whole test suite: lint, format, types, import layers, then pytest.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
bash scripts/docker.sh

echo "== ruff check"; ruff check src tests bench
echo "== ruff format --check"; ruff format --check src tests bench
echo "== mypy"; mypy
echo "== import-linter"; lint-imports --config pyproject.toml
echo "== pytest"; pytest -q "$@"
