#!/usr/bin/env bash
# Create .venv/ at the repository root and install wca with its test tools.
# torchvision has no CPU-only wheel on PyPI, so this pulls the standard (CUDA) torch build;
# it runs fine on a CPU (about 5 GB, a few minutes on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
