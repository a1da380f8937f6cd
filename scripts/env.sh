#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
# torch is pinned here, before anything else, so that the CPU build on this machine's disk is used instead of
# a multi-GB CUDA build pulled by an unpinned dependency. pyproject.toml only declares a range.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${DESCORE_TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[dev]"
