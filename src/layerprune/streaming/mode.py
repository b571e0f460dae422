"""When to stream: on request, or when the model, in the dtype it is loaded in, exceeds the memory.

In memory a model takes about its weights' size in the load dtype (element counts from the
safetensors headers × the dtype's bytes: a bf16 checkpoint loaded as float32 takes twice its
file size); streamed, one layer (scoring) or one tensor (surgery) of it. :func:`choose_streaming`
returns the decision and the reason the command prints; :func:`require_memory` refuses, before
loading, a model that would not fit, naming the flag that does.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import torch

from layerprune.errors import UserError
from layerprune.records import read_json_object
from layerprune.streaming.checkpoint import DTYPES, INDEX_FILE, SINGLE_FILE, read_header, tensor_nbytes

GIB = 2**30


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (``MemAvailable``)."""
    return psutil.virtual_memory().available


def loaded_bytes(directory: Path, dtype: torch.dtype | str | None = None) -> int | None:
    """Bytes of the weights loaded in ``dtype`` (``None``/``"auto"``: their own); ``None`` without safetensors.

    Floating-point tensors take ``dtype``'s size per element; integer tensors keep theirs.
    """
    shards = sorted(directory.glob("*.safetensors"))
    if not shards:
        return None
    if (directory / INDEX_FILE).is_file():
        read_json_object(directory / INDEX_FILE, "a safetensors index")
    total = 0
    for shard in shards:
        for name, entry in read_header(shard)[1].items():
            if name == "__metadata__":
                continue
            own = DTYPES[entry["dtype"]]
            cast = isinstance(dtype, torch.dtype) and own.is_floating_point
            total += tensor_nbytes(entry["dtype"], entry["shape"]) // own.itemsize * (dtype if cast else own).itemsize
    return total


def gguf_loaded_bytes(spec: str) -> int | None:
    """Bytes of a GGUF's tensors dequantized to float32 (4 per element); ``None`` if ``spec`` names no GGUF file.

    ``spec`` is ``default`` (the embedded model) or a path ending in ``.gguf``. Only the header is read.
    """
    from layerprune.gguf.files import check_gguf
    from layerprune.models.loading import DEFAULT_SPEC, check_model_spec, default_gguf_path, expand_spec

    spec = expand_spec(spec)
    path = default_gguf_path() if spec == DEFAULT_SPEC else Path(spec)
    if path.suffix != ".gguf" or not path.is_file():
        return None
    check_model_spec(str(path))  # a file that is no GGUF fails as loading it would
    return 4 * sum(int(tensor.n_elements) for tensor in check_gguf(path).tensors)


def choose_streaming(spec: str, requested: bool | None, dtype: torch.dtype | str | None = None) -> tuple[bool, str]:
    """(stream?, why): ``requested`` True/False decides; ``None`` streams a local model larger than the memory.

    The size is the weights' in ``dtype`` for a safetensors checkpoint (:func:`loaded_bytes`),
    and their float32 size for a GGUF file, which is dequantized to float32 (:func:`gguf_loaded_bytes`).
    """
    if requested is not None:
        return requested, "--streaming" if requested else "--no-streaming"
    directory = Path(spec)
    size = loaded_bytes(directory, dtype) if directory.is_dir() else gguf_loaded_bytes(spec)
    if size is None:
        return False, (
            f"{spec} is not a local safetensors checkpoint ({SINGLE_FILE} or shards with {INDEX_FILE}) or GGUF file"
        )
    free = available_memory()
    verdict = "is larger than" if size > free else "fits in"
    return size > free, f"the model ({size / GIB:.2f} GiB) {verdict} the available memory ({free / GIB:.2f} GiB)"


def require_memory(directory: Path, dtype: torch.dtype | str | None) -> None:
    """Refuse to load ``directory`` in memory when its weights in ``dtype`` exceed the available memory.

    The message names the flags that help: ``--streaming`` (score and prune read one layer or
    tensor at a time) and, for a float32 load, ``--dtype bfloat16`` (half the bytes).
    """
    size = loaded_bytes(directory, dtype)
    if size is None:
        return
    float32 = size == loaded_bytes(directory, torch.float32)
    hint = "score and prune stream it with --streaming"
    if float32:
        hint += "; --dtype bfloat16 (a recipe's model.dtype: bfloat16) loads it in half"
    require_bytes(size, f"{directory} needs {{size}} of memory loaded{' as float32' if float32 else ''}", hint)


def require_bytes(size: int, what: str, hint: str) -> None:
    """A :class:`UserError` ``"<what>, more than the N GiB available: <hint>"`` if ``size`` exceeds the memory.

    ``what`` holds ``{size}``, filled in with the size in GiB.
    """
    free = available_memory()
    if size > free:
        message = what.format(size=f"{size / GIB:.2f} GiB")
        raise UserError(f"{message}, more than the {free / GIB:.2f} GiB available: {hint}")
