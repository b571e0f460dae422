"""Where each family keeps the projections that width pruning slices, keyed by ``config.model_type``.

Width pruning removes attention heads (whole KV groups) and FFN channels. It needs, per
decoder layer, the attention output projection (whose input columns are grouped by head),
the query/key/value projections (whose output rows are grouped by head), and the MLP's
down projection (input columns = channels) with its gate/up projections (output rows =
channels). Phi-3 fuses q/k/v into ``qkv_proj`` and gate/up into ``gate_up_proj``; those are
sliced by their row blocks. A family without an entry cannot be width-pruned, which is a
:class:`~layerprune.errors.UserError` naming the families that can.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig, PreTrainedModel

from layerprune.errors import UserError
from layerprune.models.architectures import decoder_config
from layerprune.registry import Registry


@dataclass(frozen=True)
class WidthLayout:
    """Dotted paths inside one decoder layer; ``qkv``/``gate_up`` are set for fused families instead."""

    family: str
    o_proj: str = "self_attn.o_proj"
    q_proj: str = "self_attn.q_proj"
    k_proj: str = "self_attn.k_proj"
    v_proj: str = "self_attn.v_proj"
    qkv_proj: str = ""
    down_proj: str = "mlp.down_proj"
    gate_proj: str = "mlp.gate_proj"
    up_proj: str = "mlp.up_proj"
    gate_up_proj: str = ""


LAYOUTS: Registry[WidthLayout] = Registry("width layout")


def register_layout(layout: WidthLayout) -> WidthLayout:
    """Add a family's projection layout; ``layout.family`` is the ``config.model_type`` it serves."""
    LAYOUTS.add(layout.family, layout)
    return layout


for _family in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma3", "olmo2", "granite"):
    register_layout(WidthLayout(_family))
register_layout(
    WidthLayout(
        "phi3",
        q_proj="",
        k_proj="",
        v_proj="",
        qkv_proj="self_attn.qkv_proj",
        gate_proj="",
        up_proj="",
        gate_up_proj="mlp.gate_up_proj",
    )
)


def width_families() -> list[str]:
    return LAYOUTS.names()


def get_layout(model_or_config: PreTrainedModel | PretrainedConfig) -> WidthLayout:
    """The family's layout; a family whose projections cannot be located is a :class:`UserError`."""
    config = getattr(model_or_config, "config", model_or_config)
    family = config.model_type
    if family not in LAYOUTS:
        raise UserError(
            f"width pruning cannot locate the attention/MLP projections of model_type {family!r}; "
            f"supported: {', '.join(width_families())}"
        )
    return LAYOUTS.get(family)


@dataclass(frozen=True)
class LayerWidth:
    """One decoder layer's attention heads, KV heads and FFN channels."""

    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int

    @property
    def group_size(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads


def dense_width(model: PreTrainedModel) -> tuple[LayerWidth, int]:
    """The model's (global) layer width and its head dimension."""
    config = decoder_config(model)
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return LayerWidth(heads, kv, config.intermediate_size), head_dim
