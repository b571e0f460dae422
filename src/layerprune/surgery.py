"""Layer surgery: remove or keep decoder layers so that the result is a correct, reloadable model.

The failures users report from research code are each handled here:

* ``layer_idx`` attributes (used by the KV cache) are renumbered on every submodule;
* per-layer config lists (``layer_types`` and any list as long as the layer count) are
  *sliced* by the kept indices, never truncated or regenerated, so Gemma 2/3 and Qwen
  keep each layer's sliding/full attention type;
* the family's layer-count key is updated, so no layer is silently skipped or cached wrongly;
* modules are reused, not copied, so tied embeddings stay tied and no shared tensors appear.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from layerprune.errors import UserError
from layerprune.models.architectures import decoder_config, get_architecture, get_submodule
from layerprune.provenance import get_provenance, record_step

logger = logging.getLogger(__name__)

_NOT_PER_LAYER = {"architectures"}


def validate_indices(indices: Iterable[int], num_layers: int, *, removing: bool) -> list[int]:
    """Sorted unique indices; raise :class:`UserError` (a ``ValueError``) on bad input."""
    indices = list(indices)
    if any(not isinstance(i, int) or isinstance(i, bool) for i in indices):
        raise UserError(f"layer indices must be integers, got {indices}")
    bad = [i for i in indices if not 0 <= i < num_layers]
    if bad:
        raise UserError(
            f"layer indices {bad} are out of range for a model with {num_layers} layers (0..{num_layers - 1})"
        )
    duplicates = sorted({i for i in indices if indices.count(i) > 1})
    if duplicates:
        raise UserError(f"layer indices {duplicates} are given more than once")
    remaining = num_layers - len(indices) if removing else len(indices)
    if remaining == 0:
        raise UserError(f"cannot remove all {num_layers} layers; at least one must remain")
    return sorted(indices)


def remove_layers(model: PreTrainedModel, indices: Iterable[int], method: str = "manual", **details) -> PreTrainedModel:
    """Delete the decoder layers at ``indices`` (current numbering) in place and return the model."""
    count = len(get_submodule(model, get_architecture(model).layers))
    removed = validate_indices(indices, count, removing=True)
    kept = [i for i in range(count) if i not in set(removed)]
    return _keep(model, kept, method=method, **details)


def keep_layers(model: PreTrainedModel, indices: Iterable[int], method: str = "manual", **details) -> PreTrainedModel:
    """Keep only the decoder layers at ``indices`` (current numbering, kept in ascending order)."""
    count = len(get_submodule(model, get_architecture(model).layers))
    kept = validate_indices(indices, count, removing=False)
    return _keep(model, kept, method=method, **details)


def replace_layers(model: PreTrainedModel, new_layers: Sequence[nn.Module], layer_map: Sequence[int]) -> None:
    """Install ``new_layers`` as the full decoder stack.

    ``layer_map[i]`` is the *current* index whose per-layer config entries (attention type,
    …) layer ``i`` takes over. Merging uses this to put a fused layer in place of a run.
    """
    arch = get_architecture(model)
    parent_path, _, name = arch.layers.rpartition(".")
    parent = get_submodule(model, parent_path)
    setattr(parent, name, nn.ModuleList(new_layers))
    _renumber_layer_idx(new_layers)
    _slice_config(model, list(layer_map))
    provenance = get_provenance(model)
    provenance.layer_map = [provenance.layer_map[i] for i in layer_map]


def _keep(model: PreTrainedModel, kept: list[int], method: str, **details) -> PreTrainedModel:
    _refuse_index_dependent_math(model)
    layers = get_submodule(model, get_architecture(model).layers)
    removed_now = [get_provenance(model).layer_map[i] for i in range(len(layers)) if i not in set(kept)]
    replace_layers(model, [layers[i] for i in kept], kept)
    record_step(model, "prune", method=method, removed_source_layers=removed_now, **details)
    logger.info("removed source layers %s; %d layers remain", removed_now, len(kept))
    return model


def _refuse_index_dependent_math(model: PreTrainedModel | PretrainedConfig) -> None:
    """GPT-2 can scale attention by 1/(layer_idx+1); renumbering would silently change every kept layer."""
    if getattr(getattr(model, "config", model), "scale_attn_by_inverse_layer_idx", False):
        raise UserError(
            "this model sets scale_attn_by_inverse_layer_idx, so a layer's output depends on its index; "
            "removing layers would change the kept layers' math"
        )


def _renumber_layer_idx(layers: Sequence[nn.Module]) -> None:
    """Set every ``layer_idx`` attribute in layer ``i`` (the layer and all its submodules) to ``i``."""
    for new_index, layer in enumerate(layers):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index


def _slice_config(model: PreTrainedModel, kept: list[int]) -> list[str]:
    """Slice per-layer config lists by ``kept`` and set the layer count; return the sliced keys."""
    config = decoder_config(model)
    arch = get_architecture(model)
    old_count = getattr(config, arch.layer_count_key)
    sliced = []
    for key in _per_layer_keys(config, old_count, arch):
        values = getattr(config, key)
        setattr(config, key, type(values)(values[i] for i in kept))
        sliced.append(key)
    for key in arch.layer_index_fields:
        if getattr(config, key, None) is not None:
            new_index = {old: new for new, old in enumerate(kept)}
            setattr(config, key, [new_index[i] for i in getattr(config, key) if i in new_index])
    setattr(config, arch.layer_count_key, len(kept))
    return sliced


def _per_layer_keys(config, count: int, arch) -> list[str]:
    keys = [k for k in arch.per_layer_fields if getattr(config, k, None) is not None]
    skip = _NOT_PER_LAYER | set(arch.layer_index_fields)
    for key, value in vars(config).items():
        if key in keys or key in skip or key.endswith("token_id") or key.startswith("_"):
            continue
        if isinstance(value, list | tuple) and len(value) == count:
            keys.append(key)
    return keys
