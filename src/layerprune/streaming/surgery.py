"""Streamed surgery: prune, keep or merge fixed groups of a safetensors checkpoint without loading the model.

Removing layers is a renaming of tensors (``layers.{i}`` → ``layers.{j}``) plus a config
edit, so the output is written tensor by tensor: each kept tensor is read from its shard,
written under its new name and freed (peak memory: the largest tensor; one group of
layers while a merged group is computed). The config is edited by the same per-layer
slicing as in-memory surgery (:func:`layerprune.surgery.slice_config`), merged layers are
fused by the same :func:`~layerprune.merging.operators.merge_layers`, and the output
directory (shards, index, config, generation config, tokenizer, ``layerprune.json``) is
written atomically through :func:`~layerprune.saving.atomic_directory`. The result equals
the in-memory path's output tensor by tensor, bitwise (tested).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig

from layerprune.errors import UserError
from layerprune.merging.operators import MERGE_OPERATORS, merge_layers
from layerprune.models.loading import load_tokenizer, resolve_dtype
from layerprune.provenance import RECORD_FILE, Provenance, read_record
from layerprune.saving import atomic_directory, write_json, write_legacy_keys
from layerprune.streaming.checkpoint import Checkpoint, free_bytes
from layerprune.streaming.layers import StreamedModel
from layerprune.streaming.shards import PlannedTensor, dtype_name, write_shards
from layerprune.surgery import _refuse_index_dependent_math, slice_config, validate_indices

logger = logging.getLogger(__name__)

Group = tuple[int, int]


def stream_remove(
    spec: str, output: str | Path, indices: Sequence[int], method: str = "manual", **options: Any
) -> Path:
    """Write ``spec``'s checkpoint without the layers at ``indices`` to ``output`` (see :func:`stream_keep`)."""
    checkpoint = open_checkpoint(spec)
    removed = set(validate_indices(indices, checkpoint.num_layers, removing=True))
    kept = [i for i in range(checkpoint.num_layers) if i not in removed]
    return _stream_surgery(spec, checkpoint, output, [(i, i) for i in kept], method=method, **options)


def stream_keep(spec: str, output: str | Path, indices: Sequence[int], method: str = "manual", **options: Any) -> Path:
    """Write only the layers at ``indices`` of ``spec``'s checkpoint to ``output``, streamed.

    ``options``: ``overwrite``, ``dtype`` (cast floating tensors; default: keep),
    ``max_shard_bytes`` (default: the input's largest shard, unsharded if it is one file),
    ``progress``, ``cache_dir``; any other keyword is recorded in the ``prune`` step of
    ``layerprune.json``, as :func:`layerprune.surgery.keep_layers` records it.
    """
    checkpoint = open_checkpoint(spec)
    kept = validate_indices(indices, checkpoint.num_layers, removing=False)
    return _stream_surgery(spec, checkpoint, output, [(i, i) for i in kept], method=method, **options)


def stream_merge(
    spec: str, output: str | Path, groups: Sequence[Group], operator: str = "rdsc", **options: Any
) -> Path:
    """Fuse each group ``(first, last)`` of layers into one (base ``first``) with ``operator``; streamed.

    Equals ``LayerStack.initial(layers, operator).merge(...)`` per group followed by
    :func:`~layerprune.merging.stack.apply_stack`, the in-memory merge with fixed groups.
    """
    MERGE_OPERATORS.get(operator)
    checkpoint = open_checkpoint(spec)
    return _stream_surgery(spec, checkpoint, output, stack_groups(groups, checkpoint.num_layers), operator=operator,
                           **options)  # fmt: skip


def stack_groups(groups: Sequence[Group], count: int) -> list[Group]:
    """Every current layer as a group: the given ``(first, last)`` spans, singletons elsewhere."""
    spans = sorted((int(first), int(last)) for first, last in groups)
    covered = [i for first, last in spans for i in range(first, last + 1)]
    if any(last <= first for first, last in spans) or len(set(covered)) != len(covered):
        raise UserError(f"merge groups must be spans of at least two layers that do not overlap, got {list(groups)}")
    validate_indices(covered, count, removing=False)
    starts = {first: last for first, last in spans}
    result, index = [], 0
    while index < count:
        last = starts.get(index, index)
        result.append((index, last))
        index = last + 1
    return result


def open_checkpoint(spec: str, cache_dir: str | Path | None = None) -> Checkpoint:
    """The checkpoint of ``spec``: a local directory, or ``default``/a ``.gguf`` file (:func:`gguf_checkpoint`)."""
    from layerprune.models.loading import DEFAULT_SPEC, default_gguf_path

    if spec == DEFAULT_SPEC or (spec.endswith(".gguf") and Path(spec).is_file()):
        return gguf_checkpoint(default_gguf_path() if spec == DEFAULT_SPEC else Path(spec), cache_dir)
    if not Path(spec).is_dir():
        raise UserError(f"streaming needs a local model directory (or 'default' or a .gguf file), got {spec!r}")
    return Checkpoint.open(spec)


def gguf_checkpoint(path: Path, cache_dir: str | Path | None) -> Checkpoint:
    """A GGUF streamed from its memory map (families :mod:`layerprune.gguf.cache` streams), else its fp32 cache."""
    from layerprune.gguf.cache import open_gguf_checkpoint, streamable
    from layerprune.models.loading import cache_root, file_digest, gguf_cache_directory

    if streamable(path):
        return open_gguf_checkpoint(path, cache_root(cache_dir) / "gguf-sidecar" / file_digest(path))
    return Checkpoint.open(gguf_cache_directory(path, cache_dir))


def source_provenance(spec: str, checkpoint: Checkpoint) -> Provenance:
    """What :func:`layerprune.models.load_model` attaches: the directory's record, else ``spec`` as its own source."""
    record = read_record(spec) if Path(spec).is_dir() else None
    if record is not None:
        return Provenance.from_record(record)
    count = checkpoint.num_layers
    return Provenance(source=spec, source_num_layers=count, layer_map=list(range(count)))


def _stream_surgery(
    spec: str,
    checkpoint: Checkpoint,
    output: str | Path,
    groups: list[Group],
    *,
    operator: str | None = None,
    overwrite: bool = False,
    dtype: str | torch.dtype | None = None,
    max_shard_bytes: int | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    **details: Any,
) -> Path:
    _refuse_index_dependent_math(checkpoint.config)
    target = resolve_dtype(dtype)
    tensors = _plan(checkpoint, groups, operator, None if target == "auto" else target)
    _check_disk(output, sum(t.nbytes for t in tensors))
    record = _record(source_provenance(spec, checkpoint), groups, operator, details)
    config = copy.deepcopy(checkpoint.config)
    slice_config(config, checkpoint.architecture, [first for first, _ in groups], checkpoint.num_layers)
    if target != "auto":
        config.dtype = target
    _stamp_sub_config_dtypes(config)
    with atomic_directory(output, overwrite=overwrite) as tmp:
        write_shards(tmp, tensors, max_shard_bytes or _input_shard_bytes(checkpoint), progress)
        config.save_pretrained(tmp)
        _generation_config(checkpoint).save_pretrained(tmp)
        _save_tokenizer(checkpoint, tmp)
        write_json(tmp / RECORD_FILE, record)
        write_legacy_keys(tmp)
    logger.info("wrote %d layers to %s", len(groups), output)
    return Path(output)


def _plan(
    checkpoint: Checkpoint, groups: list[Group], operator: str | None, dtype: torch.dtype | None
) -> list[PlannedTensor]:
    """The output tensors in order: non-layer tensors, then each new layer's tensors."""
    plans = [
        _copied(checkpoint, name, name, dtype) for name in checkpoint.weight_map if checkpoint.layer_of(name) is None
    ]
    merged = _GroupMerger(checkpoint, operator) if any(first != last for first, last in groups) else None
    for new_index, (first, last) in enumerate(groups):
        for name in checkpoint.layer_names(first):
            new_name = checkpoint.renamed(name, new_index)
            if first == last:
                plans.append(_copied(checkpoint, name, new_name, dtype))
            else:
                plans.append(merged.planned(name, new_name, (first, last), dtype))
    return plans


def _copied(checkpoint: Checkpoint, name: str, new_name: str, dtype: torch.dtype | None) -> PlannedTensor:
    stored, shape = checkpoint.info(name)
    target = _cast_name(stored, dtype)
    return PlannedTensor(new_name, target, shape, lambda: _cast(checkpoint.tensor(name), dtype))


class _GroupMerger:
    """Merged tensors of one group at a time (the last group's result is cached while its tensors are written)."""

    def __init__(self, checkpoint: Checkpoint, operator: str) -> None:
        self.checkpoint = checkpoint
        self.operator = operator
        self.streamed = StreamedModel(checkpoint)
        self.model_names = {stored: name for name, stored in self.streamed.names.items()}

    def planned(self, name: str, new_name: str, group: Group, dtype: torch.dtype | None) -> PlannedTensor:
        stored, shape = self.checkpoint.info(name)
        if name not in self.model_names:
            raise UserError(f"cannot merge: checkpoint tensor {name} is not one parameter of the layer module")
        return PlannedTensor(new_name, _cast_name(stored, dtype), shape, lambda: _cast(self._fused(group)[name], dtype))

    @functools.lru_cache(maxsize=1)  # noqa: B019  (one merger per surgery; the cache holds one group)
    def _fused(self, group: Group) -> dict[str, torch.Tensor]:
        """Checkpoint name (of the base layer) → fused tensor, by the in-memory merge operator."""
        first, last = group
        with contextlib.ExitStack() as stack:
            layers = [stack.enter_context(self.streamed.layer(i)) for i in range(first, last + 1)]
            fused = merge_layers(layers, self.operator)
        base = _module_prefix(self.streamed, first)
        return {self.streamed.names[f"{base}.{n}"]: t for n, t in fused.state_dict().items() if f"{base}.{n}" in
                self.streamed.names}  # fmt: skip


def _module_prefix(streamed: StreamedModel, index: int) -> str:
    from layerprune.models.architectures import get_architecture

    return f"{get_architecture(streamed.model).layers}.{index}"


def _cast_name(stored: str, dtype: torch.dtype | None) -> str:
    from layerprune.streaming.checkpoint import DTYPES

    return dtype_name(dtype) if dtype is not None and DTYPES[stored].is_floating_point else stored


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def _record(provenance: Provenance, groups: list[Group], operator: str | None, details: dict) -> dict[str, Any]:
    """``layerprune.json`` as the in-memory prune (``_keep``) or merge (``apply_stack``) records it."""
    old_map = provenance.layer_map
    kept = {first for first, _ in groups}
    if operator is None:
        removed_now = [old_map[i] for i in range(len(old_map)) if i not in kept]
        step = {"stage": "prune", "method": details.pop("method", "manual"), "removed_source_layers": removed_now}
    else:
        fused = [[old_map[first], old_map[last]] for first, last in groups if first != last]
        steps = [{"layers": pair, "similarity": float("nan")} for pair in fused]
        step = {"stage": "merge", "merged_source_groups": fused, "steps": steps, "operator": operator}
    provenance.layer_map = [old_map[first] for first, _ in groups]
    provenance.steps.append({**step, **details})
    return provenance.to_record()


def _stamp_sub_config_dtypes(config) -> None:
    """``from_pretrained`` writes the model's dtype into every sub-config (Gemma 3's text/vision); so do we."""
    for key in getattr(config, "sub_configs", {}):
        sub = getattr(config, key, None)
        if sub is not None:
            sub.dtype = config.dtype


def _check_disk(output: str | Path, needed: int) -> None:
    free = free_bytes(Path(output).absolute().parent)
    if needed > free:
        raise UserError(
            f"not enough disk for {output}: the output needs {needed / 2**30:.2f} GiB, {free / 2**30:.2f} GiB free"
        )


def _input_shard_bytes(checkpoint: Checkpoint) -> int | None:
    shards = set(checkpoint.weight_map.values())
    return None if len(shards) == 1 else max((checkpoint.path / s).stat().st_size for s in shards)


def _generation_config(checkpoint: Checkpoint) -> GenerationConfig:
    if (checkpoint.path / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(checkpoint.path)
    return GenerationConfig.from_model_config(checkpoint.config)


def _save_tokenizer(checkpoint: Checkpoint, directory: Path) -> None:
    try:
        tokenizer = load_tokenizer(str(checkpoint.path))
    except (OSError, ValueError):
        logger.warning("no tokenizer in %s; the output has none", checkpoint.path)
        return
    tokenizer.save_pretrained(directory)
