"""The architecture table: where each model family keeps what layerprune touches.

Architectures are data (as in mergekit): one :class:`Architecture` entry per
``config.model_type`` names the decoder-layer list, the layer-count config key, the
per-layer config lists, the final norm, the embeddings and LM head, and the LoRA target
modules. Nothing else in layerprune knows family names. Adding a family is one
:func:`register_architecture` call plus a tiny-model entry in ``tests/tiny_models.py``.

A family without an entry gets one inferred from the model (:mod:`layerprune.models.inference`),
logged and shown by ``layerprune info``; :func:`register_override` confirms or corrects single
fields of an inferred entry (LoRA targets, a refusal with its reason). The family matrix test
(``tests/test_family_matrix.py``) runs the surgery gate on every causal-LM family.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from layerprune.models.inference import infer_fields, meta_model

logger = logging.getLogger(__name__)

_LLAMA_LORA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Architecture:
    """Where one model family keeps its decoder layers and related parts.

    Paths are dotted attribute paths from the ``*ForCausalLM`` object.
    ``per_layer_fields`` are config lists with one entry per layer (sliced by the kept
    indices); ``layer_index_fields`` are config lists *of layer indices* (such as MoE
    layer sets), which are filtered and renumbered instead.
    ``config_path`` names the sub-config that holds the decoder settings of a composite
    model (``text_config`` for multimodal Gemma 3); empty for text-only models.
    ``layer_returns_tuple`` marks layers that return ``(hidden_states, ...)``; ``refusal``
    is the reason layers of this family cannot be removed (empty when they can);
    ``inferred`` marks an entry read off the model rather than confirmed in the table;
    ``confirmed`` names the fields of an inferred entry that :func:`register_override` fixes.
    """

    family: str
    layers: str
    final_norm: str
    embeddings: str
    lm_head: str = "lm_head"
    layer_count_key: str = "num_hidden_layers"
    per_layer_fields: tuple[str, ...] = ()
    layer_index_fields: tuple[str, ...] = ()
    lora_targets: tuple[str, ...] = _LLAMA_LORA
    config_path: str = ""
    layer_returns_tuple: bool = False
    refusal: str = ""
    inferred: bool = False
    confirmed: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        """One ``field: value`` line per field, for ``layerprune info``."""
        return [f"{name}: {value}" for name, value in vars(self).items()]


_ARCHITECTURES: dict[str, Architecture] = {}
_OVERRIDES: dict[str, dict[str, object]] = {}
_INFERRED: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Add a family to the table; ``arch.family`` is the ``config.model_type`` it serves."""
    if arch.family in _ARCHITECTURES:
        raise ValueError(f"architecture {arch.family!r} is already registered")
    _ARCHITECTURES[arch.family] = arch
    return arch


def register_override(family: str, **fields: object) -> None:
    """Confirm or correct fields of the entry inferred for ``family`` (e.g. ``lora_targets``, ``refusal``)."""
    unknown = set(fields) - set(Architecture.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown Architecture fields {sorted(unknown)}")
    _OVERRIDES.setdefault(family, {}).update(fields)
    _INFERRED.pop(family, None)


def _llama_like(family: str, **overrides: object) -> Architecture:
    fields = {"layers": "model.layers", "final_norm": "model.norm", "embeddings": "model.embed_tokens"}
    fields.update(overrides)
    return Architecture(family=family, **fields)  # type: ignore[arg-type]


for _family in ("llama", "mistral", "gemma", "olmo", "olmo2", "granite", "cohere", "stablelm", "helium"):
    register_architecture(_llama_like(_family))
register_architecture(_llama_like("glm", lora_targets=(*_LLAMA_LORA[:4], "gate_up_proj", "down_proj")))
for _family in ("qwen2", "qwen3", "gemma2", "gemma3_text", "exaone4"):
    register_architecture(_llama_like(_family, per_layer_fields=("layer_types",)))
register_architecture(_llama_like("smollm3", per_layer_fields=("layer_types", "no_rope_layers")))
register_architecture(_llama_like("mixtral", lora_targets=_LLAMA_LORA[:4]))
register_architecture(
    _llama_like(
        "qwen2_moe",
        per_layer_fields=("layer_types",),
        layer_index_fields=("mlp_only_layers",),
        lora_targets=_LLAMA_LORA[:4],
    )
)
register_architecture(_llama_like("starcoder2", lora_targets=(*_LLAMA_LORA[:4], "c_fc", "c_proj")))
register_architecture(
    _llama_like(
        "phi", final_norm="model.final_layernorm", lora_targets=("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
    )
)
register_architecture(
    _llama_like(
        "gemma3",
        layers="model.language_model.layers",
        final_norm="model.language_model.norm",
        embeddings="model.language_model.embed_tokens",
        per_layer_fields=("layer_types",),
        config_path="text_config",
    )
)
register_architecture(_llama_like("phi3", lora_targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj")))
register_architecture(
    Architecture(
        family="gpt2",
        layers="transformer.h",
        final_norm="transformer.ln_f",
        embeddings="transformer.wte",
        layer_count_key="n_layer",
        lora_targets=("c_attn", "c_proj", "c_fc"),
    )
)
_FUSED_QKV_LORA = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
register_architecture(
    Architecture(
        family="gpt_neox",
        layers="gpt_neox.layers",
        final_norm="gpt_neox.final_layer_norm",
        embeddings="gpt_neox.embed_in",
        lora_targets=_FUSED_QKV_LORA,
    )
)
register_architecture(
    Architecture(
        family="opt",
        layers="model.decoder.layers",
        final_norm="model.decoder.final_layer_norm",
        embeddings="model.decoder.embed_tokens",
        lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    )
)


register_override(
    "rwkv",
    refusal="RWKV blocks return the recurrent state that the model loop threads into the next block, so no "
    "stand-in can bypass a block (the metrics and the surgery check need one)",
)


register_override(
    "zaya",
    refusal="each ZAYA layer routes with the router hidden states of the layer below, so removing a layer "
    "changes the routing of the next one",
)


register_override(
    "zamba2",
    refusal="the hybrid layers share one attention block whose per-layer adapters (gate_up_proj_adapter_list, "
    "linear_q/k/v_adapter_list) each layer picks by its index in hybrid_layer_ids, through a map the block builds "
    "from the config once; removing a layer re-indexes them",
)


_BLOCK_ATTENTION_RESIDUALS = (
    "the model loop hands every layer the block states (attention residuals) that earlier layers wrote, one per "
    "n_layers_per_attn_res_block layers, so no stand-in can bypass or resume a layer (the metrics and the "
    "surgery check need one)"
)
register_override("inkling2_text", refusal=_BLOCK_ATTENTION_RESIDUALS)
register_override(
    "inkling2_loop_text",
    refusal=_BLOCK_ATTENTION_RESIDUALS + "; loop_layer_index_start/end also name the looped layers by index",
)


# Confirmed LoRA targets of the families users bring in 2026 (issue 11); the rest of each entry is inferred and
# pinned by the family matrix, the targets by tests/test_family_lora_targets.py. Targets are the attention, MLP
# and sequence-mixer (Mamba, gated delta rule, short conv) input and output projections, less what an adapter
# cannot reach or should not touch:
# * projections to one scalar per head, like the routers inference drops: the gated delta rule's decay and β
#   gates (in_proj_a, in_proj_b, in_proj_ba), DeepSeek V4's indexer head weights (weights_proj);
# * weights the model reads directly instead of calling the module, which an adapter never sees: Jamba's
#   dt_proj (dt_proj.weight @ x), and the Mamba-2 out_proj of Bamba, Falcon-H1, Granite 4 and Nemotron-H, which
#   the fused training kernel (mamba_ssm) takes as a tensor (peft refuses out_proj on Falcon-H1 and Nemotron-H);
# * DeepSeek V4's o_a_proj, a grouped (block-diagonal) nn.Linear subclass whose forward peft replaces with a
#   plain matmul of the wrong shape.
# Routed experts are fused 3-D parameters, not nn.Linear: they stay frozen and the shared or dense experts'
# nn.Linear layers are adapted; except where peft (0.21) maps gate_proj/up_proj/down_proj of a Qwen2-MoE-style
# family onto the fused experts (DeepSeek V3, GLM-4.5 MoE and Lite, Qwen3-Next): there those names adapt the
# routed experts, and the dense and shared MLPs' nn.Linear layers of those names get no adapter.
_ATTENTION_LORA = _LLAMA_LORA[:4]
_MLA_LORA = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", *_LLAMA_LORA[4:])
_CONFIRMED_LORA: dict[tuple[str, ...], tuple[str, ...]] = {
    ("qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"): (
        *_LLAMA_LORA,
        "in_proj_qkv",
        "in_proj_z",
        "out_proj",
    ),
    ("qwen3_next",): (*_LLAMA_LORA, "in_proj_qkvz", "out_proj"),
    ("gemma4", "gemma4_text"): (*_LLAMA_LORA, "per_layer_input_gate", "per_layer_projection"),
    ("llama4", "llama4_text", "ministral", "ministral3", "olmo3", "glm4_moe"): _LLAMA_LORA,
    ("deepseek_v3", "glm4_moe_lite"): _MLA_LORA,
    ("deepseek_v4",): ("q_a_proj", "q_b_proj", "kv_proj", "o_b_proj", *_LLAMA_LORA[4:]),
    ("gpt_oss", "granitemoe"): _ATTENTION_LORA,
    ("glm4",): (*_ATTENTION_LORA, "gate_up_proj", "down_proj"),
    ("granitemoehybrid",): (*_ATTENTION_LORA, "in_proj", "input_linear", "output_linear"),
    ("jamba",): (*_LLAMA_LORA, "in_proj", "x_proj", "out_proj"),
    ("bamba", "falcon_h1"): (*_LLAMA_LORA, "in_proj"),
    ("lfm2", "lfm2_moe"): ("q_proj", "k_proj", "v_proj", "out_proj", "in_proj", "w1", "w2", "w3"),
    ("nemotron_h",): (*_ATTENTION_LORA, "in_proj", "up_proj", "down_proj"),
}
for _families, _targets in _CONFIRMED_LORA.items():
    for _family in _families:
        register_override(_family, lora_targets=_targets)


def supported_families() -> list[str]:
    return sorted(_ARCHITECTURES)


def get_architecture(model_or_config: PreTrainedModel | PretrainedConfig) -> Architecture:
    """The table entry for a model or config, else the one inferred from the model (built on meta for a config)."""
    config = getattr(model_or_config, "config", model_or_config)
    family = config.model_type
    if family in _ARCHITECTURES:
        return _ARCHITECTURES[family]
    if family in _INFERRED:
        return _INFERRED[family]
    model = model_or_config if isinstance(model_or_config, PreTrainedModel) else meta_model(config)
    overrides = _OVERRIDES.get(family, {})
    fields = {**infer_fields(model), **overrides, "confirmed": tuple(sorted(overrides))}
    arch = Architecture(**fields)  # type: ignore[arg-type]
    if model is model_or_config:
        _INFERRED[family] = arch
        logger.info("inferred the architecture entry of %r: %s", family, "; ".join(arch.describe()))
    return arch


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    module = model
    for part in path.split("."):
        module = getattr(module, part)
    return module


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The model's decoder-layer list (the object surgery edits in place)."""
    return get_submodule(model, get_architecture(model).layers)


def final_norm(model: PreTrainedModel) -> nn.Module | None:
    """The norm applied after the last decoder layer (None where the family has none)."""
    path = get_architecture(model).final_norm
    return get_submodule(model, path) if path else None


def decoder_config(model_or_config: PreTrainedModel | PretrainedConfig) -> PretrainedConfig:
    """The config object that holds the decoder's settings (the text config of composite models)."""
    config = getattr(model_or_config, "config", model_or_config)
    path = get_architecture(config).config_path
    return getattr(config, path) if path else config


def num_layers(model: PreTrainedModel) -> int:
    return len(decoder_layers(model))


def per_layer_attention_types(model: PreTrainedModel) -> list[str] | None:
    """``config.layer_types`` where the family has it (e.g. sliding vs full attention), else None."""
    types = getattr(decoder_config(model), "layer_types", None)
    return list(types) if types is not None else None
