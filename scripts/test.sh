#!/usr/bin/env bash
# Install (if needed), lint, and run the default test suite (slow and GPU tests are off by default).
#   bash scripts/test.sh                 # what CI runs
#   bash scripts/test.sh -m slow         # extra pytest arguments are passed through
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PYTHONHASHSEED=0
"${VENV:-.venv}"/bin/ruff check .
"${VENV:-.venv}"/bin/ruff format --check .
exec "${VENV:-.venv}"/bin/python -m pytest "$@"  # exec: a SIGTERM reaches pytest
