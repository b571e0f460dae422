"""Comparisons of two saved model directories: tensors bitwise, config, layerprune.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

VOLATILE_RECORD_FIELDS = ()


def saved_tensors(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name) for name in handle.keys()})  # noqa: SIM118
    return tensors


def assert_same_saved_model(streamed: Path, in_memory: Path) -> None:
    """Every tensor bitwise equal (same names, dtypes, shapes), config.json and layerprune.json equal."""
    ours, theirs = saved_tensors(streamed), saved_tensors(in_memory)
    assert sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape, name
        assert torch.equal(ours[name].view(torch.uint8), tensor.view(torch.uint8)), name
    for file in ("config.json", "layerprune.json", "generation_config.json"):
        assert _json(streamed / file) == _json(in_memory / file), file


def _json(path: Path) -> str:
    return json.dumps(json.loads(path.read_text()), sort_keys=True)
