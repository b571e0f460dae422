"""When to stream: on request, or when the checkpoint (its size read from the safetensors index) exceeds the memory.

In memory a model takes about its weights' size; streamed, one layer (scoring) or one
tensor (surgery) of it. :func:`choose_streaming` returns the decision and the reason the
command prints.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from layerprune.records import read_json_object
from layerprune.streaming.checkpoint import INDEX_FILE, SINGLE_FILE

GIB = 2**30


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (``MemAvailable``)."""
    return psutil.virtual_memory().available


def checkpoint_bytes(directory: Path) -> int | None:
    """The weights' size from the index's ``total_size`` (else the shards' size); ``None`` without safetensors."""
    index = directory / INDEX_FILE
    if index.is_file():
        metadata = read_json_object(index, "a safetensors index").get("metadata")
        total = metadata.get("total_size") if isinstance(metadata, dict) else None
        if isinstance(total, int) and total > 0:
            return total
    shards = list(directory.glob("*.safetensors"))
    return sum(shard.stat().st_size for shard in shards) if shards else None


def choose_streaming(spec: str, requested: bool | None) -> tuple[bool, str]:
    """(stream?, why): ``requested`` True/False decides; ``None`` streams a local checkpoint larger than the memory."""
    if requested is not None:
        return requested, "--streaming" if requested else "--no-streaming"
    directory = Path(spec)
    size = checkpoint_bytes(directory) if directory.is_dir() else None
    if size is None:
        return False, f"{spec} is not a local safetensors checkpoint ({SINGLE_FILE} or shards with {INDEX_FILE})"
    free = available_memory()
    verdict = "is larger than" if size > free else "fits in"
    return size > free, f"the checkpoint ({size / GIB:.2f} GiB) {verdict} the available memory ({free / GIB:.2f} GiB)"
