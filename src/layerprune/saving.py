"""Atomic saving of standard Hugging Face model directories plus ``layerprune.json``.

Everything is written into a temporary sibling directory that is renamed into place only
when complete, so a crash never leaves a half-written output and an existing output is
either kept whole or replaced whole.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.errors import UserError
from layerprune.models.loading import resolve_dtype
from layerprune.provenance import RECORD_FILE, get_provenance


@contextlib.contextmanager
def atomic_directory(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block completes."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise UserError(f"output {target} already exists; pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        _swap_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        tmp.rename(target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def _write_narrow_modeling(model: PreTrainedModel, directory: Path) -> None:
    """A model with per-layer widths also needs its modeling module (see layerprune.width.heterogeneous)."""
    from layerprune.width.heterogeneous import is_narrow, write_modeling

    if is_narrow(model):
        write_modeling(model, directory)


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    output_dir: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    extra_record: dict[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Save ``model`` (with its generation config) and ``tokenizer`` atomically, plus ``layerprune.json``.

    The dtype is kept unless ``dtype`` names another. ``layerprune.json`` records the
    source model, the removed source-layer indices, every step with its method and
    scores, and package versions. ``write_extra(directory)`` may add files to the output
    before it is moved into place.
    """
    output_dir = Path(output_dir)
    target_dtype = resolve_dtype(dtype)
    if target_dtype != "auto":
        model = model.to(target_dtype)
    record = {**get_provenance(model).to_record(), **(extra_record or {})}
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        _write_narrow_modeling(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_json(tmp / RECORD_FILE, record)
        if write_extra is not None:
            write_extra(tmp)
    return output_dir
