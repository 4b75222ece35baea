#!/usr/bin/env bash
# Create .venv with CPU-only PyTorch and fedstock installed (editable). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# CPU wheel first: an unpinned torch would pull several GB of CUDA packages.
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
echo "fedstock installed in $(pwd)/.venv"
