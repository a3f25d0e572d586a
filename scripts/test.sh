#!/usr/bin/env bash
# Lint, then run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest -n 2 "$@"
