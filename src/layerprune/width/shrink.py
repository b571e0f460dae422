"""Removing heads and channels from a decoder layer: slice its weights and rebuild it narrower.

A narrower layer is built by the family's own decoder-layer class from a per-layer copy of
the decoder config (``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``
overridden, ``head_dim`` pinned), then loaded with the sliced weights. So every attribute
the family derives from its config (``num_key_value_groups``, Phi-3's fused split sizes,
Qwen3's per-head ``q_norm``/``k_norm`` over ``head_dim``) is consistent by construction,
and no modeling code is copied. The same rebuild runs when a non-uniform model is loaded
(:mod:`layerprune.width.heterogeneous`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import PretrainedConfig

from layerprune.models.architectures import get_submodule
from layerprune.width.projections import LayerWidth, WidthLayout


def layer_width(layer: nn.Module, layout: WidthLayout, head_dim: int) -> LayerWidth:
    """The layer's current heads, KV heads and channels, read from its weight shapes."""
    heads = get_submodule(layer, layout.o_proj).in_features // head_dim
    channels = get_submodule(layer, layout.down_proj).in_features
    if layout.qkv_proj:
        kv = (get_submodule(layer, layout.qkv_proj).out_features // head_dim - heads) // 2
    else:
        kv = get_submodule(layer, layout.k_proj).out_features // head_dim
    return LayerWidth(heads, kv, channels)


def layer_config(config: PretrainedConfig, width: LayerWidth, head_dim: int) -> PretrainedConfig:
    """A shallow copy of the decoder config with this layer's widths and an explicit ``head_dim``."""
    result = copy.copy(config)
    result.num_attention_heads = width.num_attention_heads
    result.num_key_value_heads = width.num_key_value_heads
    result.intermediate_size = width.intermediate_size
    result.head_dim = head_dim
    return result


def head_rows(groups: list[int], group_size: int, head_dim: int) -> torch.Tensor:
    """Query rows (= o_proj columns) of the query heads in the kept KV ``groups``."""
    heads = [g * group_size + h for g in groups for h in range(group_size)]
    return kv_rows(heads, head_dim)


def kv_rows(kv_heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.tensor([h * head_dim + d for h in kv_heads for d in range(head_dim)], dtype=torch.long)


def slice_plan(
    layout: WidthLayout, width: LayerWidth, head_dim: int, keep_groups: list[int], keep_channels: list[int]
) -> dict[str, tuple[int, torch.Tensor]]:
    """``{module path: (dim, kept indices)}``: output rows of q/k/v/gate/up, input columns of o/down."""
    q = head_rows(keep_groups, width.group_size, head_dim)
    kv = kv_rows(keep_groups, head_dim)
    channels = torch.tensor(keep_channels, dtype=torch.long)
    plan = {layout.o_proj: (1, q), layout.down_proj: (1, channels)}
    if layout.qkv_proj:
        q_size, kv_size = width.num_attention_heads * head_dim, width.num_key_value_heads * head_dim
        plan[layout.qkv_proj] = (0, torch.cat([q, q_size + kv, q_size + kv_size + kv]))
    else:
        plan.update({layout.q_proj: (0, q), layout.k_proj: (0, kv), layout.v_proj: (0, kv)})
    if layout.gate_up_proj:
        plan[layout.gate_up_proj] = (0, torch.cat([channels, width.intermediate_size + channels]))
    else:
        plan.update({layout.gate_proj: (0, channels), layout.up_proj: (0, channels)})
    return plan


def sliced_state(layer: nn.Module, plan: dict[str, tuple[int, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The layer's state dict with each planned weight (and output-side bias) sliced."""
    state = dict(layer.state_dict())
    for path, (dim, index) in plan.items():
        weight_key = f"{path}.weight"
        state[weight_key] = state[weight_key].index_select(dim, index)
        if dim == 0 and f"{path}.bias" in state:
            state[f"{path}.bias"] = state[f"{path}.bias"].index_select(0, index)
    return state


def rebuild_layer(layer: nn.Module, config: PretrainedConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """A new instance of ``layer``'s class for ``config``, holding ``state`` on the same device/dtype."""
    index = next(m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int))
    reference = next(iter(state.values()))
    new = type(layer)(config, index).to(device=reference.device, dtype=reference.dtype)
    new.load_state_dict(state, strict=True)
    new.train(layer.training)
    return new


def shrink_layer(
    layer: nn.Module,
    layout: WidthLayout,
    config: PretrainedConfig,
    head_dim: int,
    keep_groups: list[int],
    keep_channels: list[int],
) -> tuple[nn.Module, LayerWidth]:
    """``layer`` rebuilt with only the KV groups ``keep_groups`` and FFN channels ``keep_channels``."""
    width = layer_width(layer, layout, head_dim)
    plan = slice_plan(layout, width, head_dim, sorted(keep_groups), sorted(keep_channels))
    new_width = LayerWidth(len(keep_groups) * width.group_size, len(keep_groups), len(keep_channels))
    return rebuild_layer(layer, layer_config(config, new_width, head_dim), sliced_state(layer, plan)), new_width
