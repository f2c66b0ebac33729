#!/usr/bin/env bash
# Install llenergymeasure into ./.venv: the pinned stack, the package (with its CLI)
# and llama.cpp's Python bindings. Safe to re-run: finished steps are skipped quickly.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
if [ -f install-llamacpp.sh ]; then
    PIP=".venv/bin/python -m pip" bash install-llamacpp.sh
fi
.venv/bin/python -c "import llenergymeasure, torch, transformers, snakemake; print('installed llenergymeasure', llenergymeasure.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
