"""A tiny model and text files on disk, and recipes over them, for the pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from layerprune.saving import save_model
from tiny_models import tiny_model, tiny_tokenizer


def tiny_workspace(root: Path) -> Path:
    """``root/tiny`` (a saved 4-layer Llama) and ``root/text.txt``; returns ``root``."""
    save_model(tiny_model("llama"), tiny_tokenizer(bos=True), root / "tiny")
    (root / "text.txt").write_text("\n".join(f"line {i} says {i * 3 % 7} and then some more" for i in range(200)))
    return root


def tiny_recipe(root: Path, **sections: Any) -> dict[str, Any]:
    """A recipe over the tiny workspace: bi removes 1 layer, a 6-step partial heal, perplexity on the text."""
    text = str(root / "text.txt")
    recipe: dict[str, Any] = {
        "model": {"spec": str(root / "tiny")},
        "calibration": {"source": text, "samples": 4, "seq_len": 16},
        "select": {"metric": "bi", "num_layers": 1},
        "heal": {
            "method": {"name": "partial", "train_layers": 1, "untie": True},
            "data": {"source": text, "seq_len": 24, "validation_size": 4},
            "train": {"max_steps": 6, "batch_size": 2, "eval_steps": 2, "learning_rate": 1e-3},
        },
        "evaluate": {"ppl": [text], "perplexity": {"seq_len": 32, "max_windows": 4}},
    }
    recipe.update(sections)
    return recipe


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path
