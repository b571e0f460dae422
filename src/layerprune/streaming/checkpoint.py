"""A local safetensors checkpoint read lazily: the index, the shards, and where each decoder layer's tensors are.

Nothing is loaded until a tensor is asked for; :meth:`Checkpoint.tensor` reads one tensor's
bytes at the offsets of the shard's safetensors header into a fresh buffer. Plain reads,
not ``safe_open``'s memory map: every page of a mapped shard that was touched counts in
the process's resident memory until the map closes, so reading a whole checkpoint through
one map shows the checkpoint's size as peak RSS. Tensor names are the
checkpoint's own (transformers may rename some on load, e.g. Gemma 3's
``language_model.model.*``); the decoder layers are found as ``<prefix>.<i>.*`` with the
prefix ending in the last part of the architecture entry's layer path.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoConfig, PretrainedConfig

from layerprune.errors import UserError
from layerprune.models.architectures import Architecture, decoder_config, get_architecture
from layerprune.records import read_json_object

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


@dataclass
class Checkpoint:
    """A model directory with ``config.json`` and safetensors weights (one file, or shards with an index).

    ``weight_map`` maps every tensor name to its shard file; ``layer_prefix`` is the name
    prefix of the decoder layers (``model.layers``), so layer ``i``'s tensors are
    ``f"{layer_prefix}.{i}.*"``.
    """

    path: Path
    config: PretrainedConfig
    weight_map: dict[str, str]
    layer_prefix: str
    _headers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        """Read the config and the index (no tensor is loaded); bad input is a :class:`UserError`."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a Hugging Face model directory (no config.json)")
        config = AutoConfig.from_pretrained(path)
        arch = get_architecture(config)
        weight_map = _weight_map(path)
        count = getattr(decoder_config(config), arch.layer_count_key)
        return cls(path, config, weight_map, _layer_prefix(weight_map, arch, count))

    @property
    def architecture(self) -> Architecture:
        return get_architecture(self.config)

    @property
    def num_layers(self) -> int:
        return getattr(decoder_config(self.config), self.architecture.layer_count_key)

    def layer_of(self, name: str) -> int | None:
        """The decoder-layer index a tensor name belongs to (None for embeddings, norms, heads, …)."""
        match = re.match(rf"{re.escape(self.layer_prefix)}\.(\d+)\.", name)
        return int(match.group(1)) if match else None

    def layer_names(self, layer: int) -> list[str]:
        """Checkpoint names of layer ``layer``'s tensors."""
        return [name for name in self.weight_map if self.layer_of(name) == layer]

    def renamed(self, name: str, new_layer: int) -> str:
        """``name`` (a tensor of some layer) moved to layer ``new_layer``."""
        rest = name[len(self.layer_prefix) + 1 :].split(".", 1)[1]
        return f"{self.layer_prefix}.{new_layer}.{rest}"

    def tensor(self, name: str) -> torch.Tensor:
        """Read one tensor from its shard (a copy owned by the caller)."""
        shard = self.weight_map[name]
        start, header = self._header(shard)
        entry = header[name]
        begin, end = entry["data_offsets"]
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        with (self.path / shard).open("rb") as handle:
            handle.seek(start + begin)
            if end > begin and handle.readinto(buffer.numpy()) != end - begin:
                raise UserError(f"{self.path / shard} is truncated: tensor {name} ends past the end of the file")
        return buffer.view(DTYPES[entry["dtype"]]).reshape(entry["shape"])

    def info(self, name: str) -> tuple[str, list[int]]:
        """(safetensors dtype name, shape) of one tensor, read from the shard header."""
        entry = self._header(self.weight_map[name])[1][name]
        return entry["dtype"], list(entry["shape"])

    def nbytes(self) -> int:
        """Size of the weights on disk (the shards' total)."""
        return sum((self.path / shard).stat().st_size for shard in set(self.weight_map.values()))

    def close(self) -> None:
        self._headers.clear()

    def _header(self, shard: str) -> tuple[int, dict[str, Any]]:
        """(byte offset of the data, header) of one shard, read once."""
        if shard not in self._headers:
            self._headers[shard] = read_header(self.path / shard)
        return self._headers[shard]


def read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(byte offset of the data, header) of a safetensors file: an 8-byte little-endian length, then JSON.

    A file too short for its header, or whose header is not a JSON object, is a :class:`UserError`.
    """
    with path.open("rb") as handle:
        prefix = handle.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
        raw = handle.read(length) if length >= 0 else b""
    try:
        header = json.loads(raw) if len(raw) == length else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise UserError(f"cannot load the model: {path} is not a valid safetensors file (truncated or corrupt header)")
    return 8 + length, header


def tensor_nbytes(dtype: str, shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count * DTYPES[dtype].itemsize


def free_bytes(directory: str | Path) -> int:
    """Free space on the file system that holds ``directory`` (or its nearest existing parent)."""
    directory = Path(directory).absolute()
    while not directory.exists():
        directory = directory.parent
    return shutil.disk_usage(directory).free


def _weight_map(path: Path) -> dict[str, str]:
    shards = sorted(p.name for p in path.glob("*.safetensors"))
    if not shards:
        raise UserError(f"{path} holds no safetensors weights; streaming reads only .safetensors checkpoints")
    index = path / INDEX_FILE
    if not index.is_file():
        if shards != [SINGLE_FILE]:
            raise UserError(f"{path} has safetensors shards {shards} but no {INDEX_FILE}")
        with safe_open(str(path / SINGLE_FILE), framework="pt") as handle:
            return dict.fromkeys(handle.keys(), SINGLE_FILE)
    weight_map = read_json_object(index, "a safetensors index", ("weight_map",))["weight_map"]
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UserError(f"{index}: not a safetensors index (weight_map should map tensor names to shard files)")
    missing = sorted(set(weight_map.values()) - set(shards))
    if missing:
        raise UserError(f"{INDEX_FILE} in {path} names shard {missing[0]}, which is not in the directory")
    unlisted = sorted(set(shards) - set(weight_map.values()))
    if unlisted:
        raise UserError(f"shard {unlisted[0]} in {path} is missing from {INDEX_FILE}")
    return weight_map


def _layer_prefix(weight_map: dict[str, str], arch: Architecture, count: int) -> str:
    """The name prefix under which tensors of exactly layers ``0 … count−1`` are stored."""
    last = arch.layers.rpartition(".")[2]
    found: dict[str, set[int]] = {}
    for name in weight_map:
        match = re.match(rf"(.*\b{re.escape(last)})\.(\d+)\.", name)
        if match:
            found.setdefault(match.group(1), set()).add(int(match.group(2)))
    prefixes = sorted(p for p, indices in found.items() if indices == set(range(count)))
    if arch.layers in prefixes:
        return arch.layers
    if len(prefixes) == 1:
        return prefixes[0]
    seen = {p: len(v) for p, v in found.items()} or "none"
    raise UserError(
        f"cannot locate the tensors of {count} decoder layers (architecture entry {arch.family!r}, "
        f"layers {arch.layers!r}) in the checkpoint; layer-like prefixes found: {seen}"
    )
