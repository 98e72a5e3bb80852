#!/usr/bin/env bash
# The test command of the README (and exactly what .ci/run runs): install, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
python -m ruff check src tests benchmarks
python -m ruff format --check src tests benchmarks
python -m mypy
python -m pytest -q --timeout=900 "$@"
