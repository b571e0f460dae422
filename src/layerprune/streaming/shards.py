"""Writing safetensors shards one tensor at a time, with the index transformers reads.

``safetensors.torch.save_file`` needs every tensor of a shard in memory at once. Here the
header (names, dtypes, shapes, byte offsets: the whole safetensors format besides the raw
data) is computed from the planned tensors' metadata first, then each tensor is produced,
written and freed, so peak memory is one tensor however large the shard. The result is
read back by ``safe_open`` and ``from_pretrained`` like any other checkpoint (tested).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from layerprune.streaming.checkpoint import DTYPES, INDEX_FILE, SINGLE_FILE, tensor_nbytes

_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: its name, dtype name, shape, and how to produce it when its turn comes."""

    name: str
    dtype: str
    shape: list[int]
    produce: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.dtype, self.shape)


def dtype_name(dtype: torch.dtype) -> str:
    return _NAMES[dtype]


def split_into_shards(tensors: Sequence[PlannedTensor], max_shard_bytes: int | None) -> list[list[PlannedTensor]]:
    """Consecutive groups of at most ``max_shard_bytes`` (a tensor larger than that gets its own shard)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and max_shard_bytes is not None and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def write_shards(
    directory: Path, tensors: Sequence[PlannedTensor], max_shard_bytes: int | None, progress: bool = True
) -> None:
    """Write ``model.safetensors`` (one shard) or ``model-0000k-of-0000n.safetensors`` plus the index."""
    shards = split_into_shards(tensors, max_shard_bytes)
    names = [SINGLE_FILE] if len(shards) == 1 else [f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in
                                                      range(1, len(shards) + 1)]  # fmt: skip
    bar = tqdm(total=len(tensors), desc="writing tensors", disable=not progress)
    for name, shard in zip(names, shards, strict=True):
        _write_shard(directory / name, shard, bar)
    bar.close()
    if len(shards) > 1:
        weight_map = {tensor.name: name for name, shard in zip(names, shards, strict=True) for tensor in shard}
        total = sum(tensor.nbytes for tensor in tensors)
        parameters = sum(tensor.nbytes // DTYPES[tensor.dtype].itemsize for tensor in tensors)
        index = {"metadata": {"total_parameters": parameters, "total_size": total}, "weight_map": weight_map}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _write_shard(path: Path, tensors: Sequence[PlannedTensor], bar: tqdm) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": tensor.shape,
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for planned in tensors:
            handle.write(_raw_bytes(planned))
            bar.update()


def _raw_bytes(planned: PlannedTensor) -> memoryview:
    tensor = planned.produce()
    if dtype_name(tensor.dtype) != planned.dtype or list(tensor.shape) != planned.shape:
        raise RuntimeError(
            f"{planned.name}: produced {tensor.dtype} {list(tensor.shape)}, planned {planned.dtype} {planned.shape}"
        )
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")
