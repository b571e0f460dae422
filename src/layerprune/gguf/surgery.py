"""Direct GGUF surgery: remove decoder blocks from a GGUF and write a GGUF, never dequantizing.

The kept blocks' tensors are copied byte for byte in their own quantization types, one
tensor at a time from the memory-mapped source (memory stays near the largest tensor);
``blk.N`` is renumbered; ``<arch>.block_count`` and every per-layer metadata array (an
``<arch>.*`` array with one entry per block: head counts, feed-forward lengths, window
patterns) are sliced; every other key (tokenizer, chat template, ...) is copied unchanged;
and a ``layerprune.*`` block records the provenance ``layerprune.json`` holds: the source
file's SHA-256, the layer map, the removed layers and the method. A removal that would
shift an attention pattern llama.cpp derives from the layer index is refused
(:mod:`layerprune.gguf.patterns`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprune.errors import UserError
from layerprune.gguf.files import architecture, block_count, check_gguf, field_value
from layerprune.gguf.patterns import attention_pattern, check_removal
from layerprune.records import file_sha256

BLOCK_NAME = re.compile(r"^blk\.(\d+)\.(.+)$")
PREFIX = "layerprune."
# Arrays under <arch>. with one entry per block that are not per-layer (none known so far would collide).
NOT_PER_LAYER = {"rope.dimension_sections"}


@dataclass
class GgufPlan:
    """What a removal does to one file: the layers kept (source numbering) and the keys sliced."""

    architecture: str
    num_layers: int
    removed: list[int]
    layer_map: list[int]
    source_layer_map: list[int]
    removed_source_layers: list[int]


def plan_removal(reader, removed: list[int]) -> GgufPlan:
    """Check ``removed`` against the file (range, duplicates, llama.cpp's attention pattern)."""
    arch, count = architecture(reader), block_count(reader)
    if not removed:
        raise UserError("no layers to remove: the output would equal the input")
    bad = sorted({i for i in removed if not 0 <= i < count})
    if bad:
        raise UserError(f"layers {bad} are out of range: the GGUF has {count} blocks (0-{count - 1})")
    if len(set(removed)) != len(removed):
        raise UserError(f"layer list {removed} names a layer twice")
    if len(removed) >= count:
        raise UserError(f"removing {len(removed)} of {count} blocks leaves none")
    check_removal(file_pattern(reader), count, sorted(removed))
    kept = [i for i in range(count) if i not in set(removed)]
    previous = field_value(reader, PREFIX + "layer_map")
    source_map = list(previous) if previous else list(range(count))
    gone = sorted(source_map[i] for i in removed)
    return GgufPlan(arch, count, sorted(removed), kept, [source_map[i] for i in kept], gone)


def remove_gguf_layers(
    source: str | Path,
    output: str | Path,
    removed: list[int],
    details: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``source`` without the blocks ``removed`` to ``output`` (atomically); return a summary."""
    from layerprune.saving import atomic_file

    reader = check_gguf(source)
    plan = plan_removal(reader, removed)
    with atomic_file(output, overwrite) as tmp:
        _write(reader, plan, tmp, _provenance(reader, Path(source), plan, details or {}))
    return summary(reader, plan, Path(source), Path(output))


def _metadata(reader) -> dict[str, Any]:
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("tokenizer.")}


def _write(reader, plan: GgufPlan, path: Path, provenance: dict[str, Any]) -> None:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), plan.architecture)
    alignment = field_value(reader, "general.alignment")
    if alignment:
        writer.data_alignment = int(alignment)
    for key, field in reader.fields.items():
        if key.startswith(("GGUF.", PREFIX)) or key == "general.architecture":
            continue
        value, vtype, sub_type = _copied_value(field, plan, key)
        writer.add_key_value(key, value, vtype, sub_type)
    for key, (value, vtype, sub_type) in provenance.items():
        writer.add_key_value(PREFIX + key, value, vtype, sub_type)
    kept = _kept_tensors(reader, plan)
    for name, tensor in kept:
        writer.add_tensor_info(name, tensor.data.shape, tensor.data.dtype, int(tensor.n_bytes), tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, tensor in kept:
        writer.write_tensor_data(tensor.data)
    writer.close()


def _copied_value(field, plan: GgufPlan, key: str) -> tuple[Any, Any, Any]:
    """The field's value (bytes for strings, so that nothing is re-encoded), sliced if it is per-layer."""
    from gguf import GGUFValueType

    vtype = field.types[0]
    if vtype == GGUFValueType.STRING:
        return bytes(field.parts[-1]), vtype, None
    if vtype != GGUFValueType.ARRAY:
        value = field.contents()
        if key == f"{plan.architecture}.block_count":
            value = len(plan.layer_map)
        return value, vtype, None
    if len(field.types) > 2:
        raise UserError(f"metadata key {key} holds nested arrays, which direct GGUF surgery does not copy")
    sub_type = field.types[-1]
    if sub_type == GGUFValueType.STRING:
        values = [bytes(field.parts[index]) for index in field.data]
    else:
        values = field.contents()
    if is_per_layer(key, len(values), plan):
        values = [values[i] for i in plan.layer_map]
    return values, vtype, sub_type


def is_per_layer(key: str, length: int, plan: GgufPlan) -> bool:
    suffix = key.removeprefix(f"{plan.architecture}.")
    return suffix != key and length == plan.num_layers and suffix not in NOT_PER_LAYER


def _kept_tensors(reader, plan: GgufPlan) -> list[tuple[str, Any]]:
    """(new name, reader tensor) in source order, blocks renumbered."""
    new_index = {old: new for new, old in enumerate(plan.layer_map)}
    kept = []
    for tensor in reader.tensors:
        match = BLOCK_NAME.match(tensor.name)
        if match is None:
            kept.append((tensor.name, tensor))
        elif int(match.group(1)) in new_index:
            kept.append((f"blk.{new_index[int(match.group(1))]}.{match.group(2)}", tensor))
    return kept


def _provenance(reader, source: Path, plan: GgufPlan, details: dict[str, Any]) -> dict[str, tuple]:
    """``layerprune.*`` keys: the first dense source (kept through repeated surgery) and this step."""
    from gguf import GGUFValueType as T

    from layerprune.provenance import package_versions

    source_sha = field_value(reader, PREFIX + "source_sha256") or file_sha256(source)
    source_layers = field_value(reader, PREFIX + "source_num_layers") or plan.num_layers
    removed_source = sorted(set(range(source_layers)) - set(plan.source_layer_map))
    step = {"operation": "remove_layers", "removed": plan.removed, **details}
    return {
        "source": (str(field_value(reader, PREFIX + "source") or source.name), T.STRING, None),
        "source_sha256": (source_sha, T.STRING, None),
        "source_num_layers": (int(source_layers), T.UINT32, None),
        "layer_map": (plan.source_layer_map, T.ARRAY, T.UINT32),
        "removed_layers": (removed_source, T.ARRAY, T.UINT32),
        "steps": (json.dumps([*_steps(reader), step], default=str), T.STRING, None),
        "version": (package_versions().get("layerprune", "unknown"), T.STRING, None),
    }


def _steps(reader) -> list[dict[str, Any]]:
    text = field_value(reader, PREFIX + "steps")
    return json.loads(text) if text else []


def summary(reader, plan: GgufPlan, source: Path, output: Path) -> dict[str, Any]:
    """Sizes before and after, the layers removed and each kept block's quantization types."""
    types: dict[int, set[str]] = {}
    for tensor in reader.tensors:
        match = BLOCK_NAME.match(tensor.name)
        if match is not None:
            types.setdefault(int(match.group(1)), set()).add(tensor.tensor_type.name)
    return {
        "removed": plan.removed,
        "removed_source_layers": plan.removed_source_layers,
        "layers": [plan.num_layers, len(plan.layer_map)],
        "file_bytes": [source.stat().st_size, output.stat().st_size],
        "block_types": {new: sorted(types.get(old, ())) for new, old in enumerate(plan.layer_map)},
    }


def gguf_source(spec: str) -> Path:
    """The GGUF file a model spec names (``default``: the embedded one); else a :class:`UserError`."""
    from layerprune.models.loading import DEFAULT_SPEC, default_gguf_path

    if spec == DEFAULT_SPEC:
        return default_gguf_path()
    if spec.endswith(".gguf") and Path(spec).is_file():
        return Path(spec)
    raise UserError(
        f"a .gguf output is written by direct surgery of a GGUF input ('default' or a .gguf file), not {spec!r}; "
        "save to a directory instead (--output DIR)"
    )


def file_pattern(reader):
    """llama.cpp's attention pattern for this file (a :class:`UserError` if its family is unsupported)."""
    return attention_pattern(architecture(reader), _metadata(reader))
