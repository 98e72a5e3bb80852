#!/usr/bin/env bash
# The test command of the README (and exactly what .ci/run runs): install, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
python -m ruff check src tests benchmarks
python -m ruff format --check src tests benchmarks
python -m mypy
lint-imports
# Hypothesis would load trio's entry-point plugin (trio comes with selenium); that plugin can crash
# pytest's summary with an AttributeError depending on import order. modalrec's tests do not need it.
export HYPOTHESIS_NO_PLUGINS=1
# Two pytest workers (one per core of the CI machine), whole files per worker so a module's fixtures
# (a server, a PostgreSQL cluster, Ray) start once: the suite takes about half the wall time of one worker.
python -m pytest -q -n 2 --dist loadfile --timeout=900 "$@"
