#!/usr/bin/env bash
# Lint, then run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks
# loadgroup: tests marked xdist_group (the web tests, one server) stay on one worker
.venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
