"""Layer surgery: remove or keep decoder layers so that the result is a correct, reloadable model.

The failures users report from research code are each handled here:

* ``layer_idx`` attributes (used by the KV cache) are renumbered on every submodule;
* per-layer config lists (``layer_types`` and any list as long as the layer count) are
  *sliced* by the kept indices, never truncated or regenerated, so Gemma 2/3 and Qwen
  keep each layer's sliding/full attention type;
* fields that name layers by index are renumbered or made explicit first
  (:mod:`layerprune.models.layer_config`, a pure function on the config dict);
* the family's layer-count key is updated, so no layer is silently skipped or cached wrongly;
* modules are reused, not copied, so tied embeddings stay tied and no shared tensors appear;
* before anything changes, the model that the new config would build (on the meta device)
  is compared layer by layer with the kept layers: a family whose config derives a layer's
  kind from its index in a way the rules do not rewrite is refused with the differing field.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from layerprune.errors import UserError
from layerprune.models.architectures import Architecture, get_architecture, get_submodule
from layerprune.models.inference import meta_model
from layerprune.models.layer_config import refuse_unkeepable, slice_layer_config
from layerprune.provenance import get_provenance, record_step

logger = logging.getLogger(__name__)

_INDEX_ATTRIBUTES = ("layer_idx", "layer_id", "layer_number", "layer_index")
# Set by position among the kept layers on purpose: Gemma 4's last layer of each type stores its KV for assistants.
_POSITIONAL_ATTRIBUTES = ("store_full_length_kv",)


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
    Raises :class:`UserError` (and changes nothing) where the family cannot keep the layers' semantics.
    """
    arch = get_architecture(model)
    new_config = sliced_config(model, arch, list(layer_map))
    check_rebuilt_layers(model.config, new_config, arch, layer_map, type(model))
    old_count = len(get_submodule(model, arch.layers))
    parent_path, _, name = arch.layers.rpartition(".")
    setattr(get_submodule(model, parent_path), name, nn.ModuleList(new_layers))
    _renumber_layer_idx(new_layers, layer_map)
    _slice_per_layer_inputs(model, arch, list(layer_map), old_count)
    target, after = decoder_config_of(model.config, arch), config_fields(decoder_config_of(new_config, arch))
    _update_config_copies(model, arch, config_fields(target), after)
    _apply_config(target, after)
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
    """Refuse families whose layer math depends on the absolute index (the entry's refusal, GPT-2's scaling)."""
    arch = get_architecture(model)
    if arch.refusal:
        raise UserError(f"cannot remove layers of model_type {arch.family!r}: {arch.refusal}")
    if getattr(getattr(model, "config", model), "scale_attn_by_inverse_layer_idx", False):
        raise UserError(
            "this model sets scale_attn_by_inverse_layer_idx, so a layer's output depends on its index; "
            "removing layers would change the kept layers' math"
        )


def _renumber_layer_idx(layers: Sequence[nn.Module], layer_map: Sequence[int]) -> None:
    """Renumber every ``layer_idx`` (or ``layer_id``…) attribute inside layer ``i`` (was ``layer_map[i]``).

    Where the ``m`` sublayers of a layer hold cache slots ``o·m … o·m + m − 1`` (LongCat-Flash's
    two attention sublayers per layer) they get ``i·m … i·m + m − 1``; every other index becomes ``i``.
    """
    for new_index, (layer, old_index) in enumerate(zip(layers, layer_map, strict=True)):
        found = [(module, key) for module in layer.modules() for key in _INDEX_ATTRIBUTES if _is_index(module, key)]
        inner = sorted({getattr(module, key) for module, key in found if module is not layer})
        width = len(inner)
        slots = width > 1 and inner == [old_index * width + j for j in range(width)]
        for module, key in found:
            if slots and module is not layer:
                setattr(module, key, new_index * width + getattr(module, key) - old_index * width)
            else:
                setattr(module, key, new_index)


def _is_index(module: nn.Module, key: str) -> bool:
    value = getattr(module, key, None)
    return isinstance(value, int) and not isinstance(value, bool)


def _slice_per_layer_inputs(model: PreTrainedModel, arch: Architecture, kept: list[int], old_count: int) -> None:
    """Keep the kept layers' blocks of per-layer input tensors (Gemma 3n/4: ``embed_tokens_per_layer``).

    Where ``hidden_size_per_layer_input = d`` is set, parameters outside the layer list with a
    dimension of ``L·d`` (the first such) hold one block of ``d`` per layer; they keep the blocks of
    ``kept``. The token embeddings and the LM head are never touched.
    """
    width = getattr(decoder_config_of(model.config, arch), "hidden_size_per_layer_input", 0) or 0
    if not width:
        return
    index = torch.tensor(kept)
    for name, module in model.named_modules():
        if name in (arch.embeddings, arch.lm_head) or name == arch.layers or name.startswith(arch.layers + "."):
            continue
        for key, parameter in list(module.named_parameters(recurse=False)):
            dim = next((d for d, size in enumerate(parameter.shape) if size == old_count * width), None)
            if dim is not None:
                blocks = parameter.data.unflatten(dim, (old_count, width)).index_select(dim, index)
                setattr(module, key, nn.Parameter(blocks.flatten(dim, dim + 1), parameter.requires_grad))
        for key in ("embedding_dim", "out_features"):
            if getattr(module, key, None) == old_count * width:
                setattr(module, key, len(kept) * width)


def _update_config_copies(
    model: PreTrainedModel, arch: Architecture, before: dict[str, Any], after: dict[str, Any]
) -> None:
    """Give the copies of changed config lists that modules outside the layers took at init their new value.

    Mllama's text model keeps ``self.cross_attention_layers = config.cross_attention_layers`` and
    reads the copy, not the config, to decide which layers attend to the image.
    """
    changed = {
        key: value
        for key, value in after.items()
        if isinstance(value, list | tuple) and isinstance(before.get(key), list | tuple) and value != before[key]
    }
    for name, module in model.named_modules():
        if name == arch.layers or name.startswith(arch.layers + "."):
            continue
        for key, value in changed.items():
            copy_ = vars(module).get(key)
            if isinstance(copy_, list | tuple) and list(copy_) == list(before[key]):
                setattr(module, key, type(copy_)(value))


def decoder_config_of(config: PretrainedConfig, arch: Architecture) -> PretrainedConfig:
    return getattr(config, arch.config_path) if arch.config_path else config


def config_fields(config: PretrainedConfig) -> dict[str, Any]:
    """The config's own attributes as a dict, with ``per_layer_config`` in its ``config.json`` form."""
    fields = {key: value for key, value in vars(config).items() if not key.startswith("_")}
    spec = vars(config).get("_heterogeneity_spec")
    if spec is not None:
        fields["per_layer_config"] = copy.deepcopy(spec.per_layer_overrides)
    return fields


def sliced_config(model: PreTrainedModel, arch: Architecture, kept: list[int]) -> PretrainedConfig:
    """A copy of the model's config for the layers ``kept`` (the model is not changed)."""
    config = copy.deepcopy(model.config)
    slice_config(config, arch, kept, count=len(get_submodule(model, arch.layers)))
    return config


def slice_config(config: PretrainedConfig, arch: Architecture, kept: list[int], count: int) -> None:
    """Edit ``config`` in place for the layers ``kept`` of ``count``: the rules of in-memory and streamed surgery."""
    target = decoder_config_of(config, arch)
    fields = config_fields(target)
    refuse_unkeepable(fields, kept, count, arch.family)
    _apply_config(target, slice_layer_config(fields, kept, arch.layer_count_key, arch.layer_index_fields, count=count))


def _apply_config(target: PretrainedConfig, fields: dict[str, Any]) -> None:
    """Set ``fields`` on ``target`` (the layer count before ``per_layer_config``, which is checked against it)."""
    per_layer = fields.get("per_layer_config")
    if per_layer is not None:
        target.per_layer_config = None
    for key, value in fields.items():
        if key != "per_layer_config" and vars(target).get(key, object()) != value:
            setattr(target, key, value)
    if per_layer is not None:
        target.per_layer_config = per_layer or None


def check_rebuilt_layers(
    old_config: PretrainedConfig,
    new_config: PretrainedConfig,
    arch: Architecture,
    layer_map: Sequence[int],
    model_class: type[PreTrainedModel] | None = None,
) -> None:
    """Raise :class:`UserError` unless ``new_config`` builds layer ``i`` as ``old_config`` builds ``layer_map[i]``.

    Both models are built on the meta device, so runtime state, adapters or quantised
    wrappers on the real layers do not enter the comparison.
    """
    before = get_submodule(meta_model(old_config, model_class), arch.layers)
    try:
        after = get_submodule(meta_model(new_config, model_class), arch.layers)
    except Exception as error:  # transformers cannot build the cut config (Zamba with one hybrid layer left)
        raise UserError(
            f"cannot remove layers of model_type {arch.family!r}: transformers cannot build its config after the "
            f"cut ({type(error).__name__}: {str(error)[:200]})"
        ) from error
    for index, source in enumerate(layer_map):
        difference = _first_difference(layer_signature(before[source]), layer_signature(after[index]))
        if difference:
            raise UserError(
                f"cannot remove layers of model_type {arch.family!r}: after the cut, its config would rebuild "
                f"layer {index} (was layer {source}) with {difference}; the family derives a layer's kind or "
                "math from its index or the layer count in a way its config cannot express"
            )


def layer_signature(layer: nn.Module) -> dict[str, object]:
    """Per submodule: its class, parameter shapes and plain attributes (index attributes excluded)."""
    signature: dict[str, object] = {}
    for name, module in layer.named_modules():
        signature[f"{name}:class"] = type(module).__name__
        for key, parameter in module.named_parameters(recurse=False):
            signature[f"{name}.{key}:shape"] = tuple(parameter.shape)
        for key, value in vars(module).items():
            plain = isinstance(value, int | float | bool | str | None) and not key.startswith("_")
            if plain and key not in (*_INDEX_ATTRIBUTES, *_POSITIONAL_ATTRIBUTES, "training"):
                signature[f"{name}.{key}"] = value
    return signature


def _first_difference(actual: dict[str, object], rebuilt: dict[str, object]) -> str:
    for key in sorted(actual.keys() | rebuilt.keys()):
        was, now = actual.get(key, "<absent>"), rebuilt.get(key, "<absent>")
        if was != now:
            return f"{key.lstrip('.') or 'the layer'} = {now} instead of {was}"
    return ""
