"""Tiny random models of every causal-LM ``model_type`` in the installed transformers.

:func:`shrunk_config` takes a family's default config and shrinks it by key name (hidden
size 32, 4 heads, 4 layers, vocabulary 128, 4 experts, state sizes 8, …; sub-configs of
composite models shrink too, the vision and audio towers to one layer). Lists with one
entry per layer are cut to 4 entries that still mix their kinds, and special token ids
move to 96..127 so that the ids :func:`tiny_models.token_batch` draws (3..95) are plain
text. ``FAMILY_OVERRIDES`` holds the few hand-made settings a family needs on top (applied to the
family's sub-config inside composite models too).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import CONFIG_MAPPING, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

LAYERS = 4
VOCAB = 128
_FIRST_SPECIAL = 96

_SIZES: dict[int, tuple[str, ...]] = {
    32: (
        "hidden_size",
        "n_embd",
        "d_model",
        "dim",
        "n_embed",
        "emb_dim",
        "embedding_size",
        "word_embed_proj_dim",
        "attention_hidden_size",
        "lru_width",
        "embedding_dim",
        "input_embedding_size",
        "output_embedding_size",
        "moe_intermediate_size",
        "shared_expert_intermediate_size",
        "shared_intermediate_size",
        "shared_experts_intermediate_size",
        "moe_shared_expert_intermediate_size",
        "expert_ffn_hidden_size",
    ),
    64: (
        "intermediate_size",
        "ffn_dim",
        "n_inner",
        "decoder_ffn_dim",
        "encoder_ffn_dim",
        "ffn_hidden_size",
        "dim_ff",
        "dff",
        "feed_forward_size",
        "intermediate_size_mlp",
        "dense_intermediate_size",
        "d_inner",
        "mamba_d_ssm",
    ),
    4: (
        "num_attention_heads",
        "n_head",
        "num_heads",
        "n_heads",
        "decoder_attention_heads",
        "attention_heads",
        "swa_num_attention_heads",
        "linear_num_heads",
        "linear_num_value_heads",
        "encoder_attention_heads",
        "rotary_dim",
        "laurel_rank",
        "hidden_size_per_layer_input",
        "time_step_rank",
        "mamba_dt_rank",
        "gated_norm_rank",
        "loop_gate_rank",
    ),
    2: ("num_key_value_heads", "num_kv_heads", "swa_num_key_value_heads", "linear_num_key_heads", "index_n_heads"),
    8: (
        "head_dim",
        "swa_head_dim",
        "linear_key_head_dim",
        "linear_value_head_dim",
        "linear_head_dim",
        "qk_rope_head_dim",
        "qk_nope_head_dim",
        "v_head_dim",
        "index_head_dim",
        "attention_head_dim",
        "d_head",
        "kv_channels",
        "mamba_d_head",
        "mamba_head_dim",
        "dim_head",
        "attention_head_size",
        "mamba_d_state",
        "state_size",
        "ssm_state_size",
        "d_state",
        "mamba_chunk_size",
        "chunk_size",
        "ple_embed_dim",
    ),
    16: ("kv_lora_rank", "q_lora_rank", "o_lora_rank", "qk_head_dim"),
}
_EXPERTS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
_TOP_K = ("num_experts_per_tok", "moe_topk", "moe_k", "num_experts_per_token")
_AT_MOST_ONE = ("n_shared_experts", "num_shared_experts", "moe_num_shared_experts", "n_group", "topk_group")
_AT_MOST_ONE += ("num_expert_group", "mamba_n_groups", "n_groups", "first_k_dense_replace", "num_dense_layers")
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "encoder_layers")
_LAYER_KEYS += ("num_decoder_layers", "num_encoder_layers")
_POSITIONS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "max_target_positions")
_WINDOWS = ("sliding_window", "sliding_window_size", "attention_window_size", "attention_chunk_size", "window_size")
# Sparse-attention indexers keep every token of the short test sequences (index_topk ≥ 16): a top-k over
# near-equal scores flips between the cached and the full pass, in the dense model as in the pruned one.
_AT_LEAST_ALL_TOKENS = ("index_topk",)
_HEADS_PER_STATE = ("mamba_n_heads", "mamba_num_heads", "n_mamba_heads")

_ATTENTION_KINDS = ("full_attention", "sliding_attention")
_HYBRID4 = ["linear_attention", "full_attention", "linear_attention", "full_attention"]
FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {
    "jamba": dict(attn_layer_period=2, attn_layer_offset=1, use_mamba_kernels=False),
    "bamba": dict(attn_layer_indices=[1, 3]),
    "granitemoehybrid": dict(layer_types=["mamba", "attention", "mamba", "attention"]),
    "lfm2": dict(layer_types=["conv", "full_attention", "conv", "full_attention"], full_attn_idxs=[1, 3]),
    "lfm2_moe": dict(layer_types=["conv", "full_attention", "conv", "full_attention"], num_dense_layers=1),
    "ministral": dict(head_dim=8),
    "nemotron_h": dict(layers_block_type=["mamba", "attention", "moe", "attention"]),
    "recurrent_gemma": dict(block_types=["recurrent", "attention"]),
    "lfm3": dict(layer_types=["conv", "full_attention", "sliding_attention", "full_attention"]),
    "hunyuan_v1_dense": dict(head_dim=8),
    "hunyuan_v1_moe": dict(head_dim=8),
    "mamba2": dict(num_heads=8),
    "dots3_note_text": dict(num_key_value_heads=4),
    # The defaults leave the expert count, top-k or key/value heads unset (None); mix dense and MoE layers.
    "deepseek_v2": dict(num_experts_per_tok=2, first_k_dense_replace=1),
    "dots1": dict(n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1),
    "nemotron": dict(num_key_value_heads=2),
    # DbrxAttention reads attn_config.rope_theta, which its config class no longer sets; clip_qkv as in DBRX.
    "dbrx": dict(attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0)),
    # Every cache-sharing layer kind needs a producer of its kind before the shared layers.
    "gemma3n_text": dict(layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"]),
    # The defaults leave the sparse indexer unsized (None); its budget keeps every token (see index_topk).
    "qwen4_exp_text": dict(
        indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=8, indexer_budget=16, indexer_compress_ratio=2
    ),
    # The default rope_parameters are empty, but each attention kind reads its own entry.
    "cohere_compass_text": dict(
        rope_parameters={kind: {"rope_type": "default", "rope_theta": 10000.0} for kind in _ATTENTION_KINDS}
    ),
    # The shared attention block reads the hidden states concatenated with the embeddings (2 × hidden size);
    # Zamba ties it across hybrid layers, so the cuts of the gate keep two of them.
    "zamba": dict(
        layers_block_type=["hybrid", "hybrid", "linear_attention", "hybrid"],
        attention_hidden_size=64,
        attention_head_dim=16,
    ),
    "zamba2": dict(
        layers_block_type=["linear_attention", "hybrid", "linear_attention", "hybrid"],
        hybrid_layer_ids=[1, 3],
        mamba_headdim=8,
        attention_hidden_size=64,
        attention_head_dim=16,
    ),
}


def causal_lm_types() -> list[str]:
    """Every ``model_type`` that ``AutoModelForCausalLM`` maps in the installed transformers."""
    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def shrunk_config(model_type: str, **overrides: Any) -> PretrainedConfig:
    """The family's default config, shrunk to a tiny model (see the module docstring)."""
    config_class = CONFIG_MAPPING[model_type]
    defaults = config_class().to_dict()
    kwargs = _shrink(defaults, LAYERS, iter(range(_FIRST_SPECIAL, VOCAB)))
    if kwargs.get("is_decoder") is False:  # encoder families serve as causal LMs only as decoders
        kwargs["is_decoder"] = True
    if "kv_lora_rank" in kwargs:  # multi-head latent attention: one key/value head per query head
        kwargs["num_key_value_heads"] = kwargs.get("num_attention_heads")
    kwargs.update(FAMILY_OVERRIDES.get(model_type, {}))
    kwargs.update(overrides)
    return config_class(**kwargs)


def tiny_family_model(model_type: str, seed: int = 0, **overrides: Any) -> PreTrainedModel:
    """A tiny random ``AutoModelForCausalLM`` of ``model_type`` in eval mode (fp32, eager attention)."""
    torch.manual_seed(seed)
    config = shrunk_config(model_type, **overrides)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.config._name_or_path = f"tiny-{model_type}"
    return model.eval()


def _shrink(values: dict[str, Any], layers: int, specials) -> dict[str, Any]:
    old_layers = next((values[k] for k in _LAYER_KEYS if isinstance(values.get(k), int)), None)
    shrunk = {}
    for key, value in values.items():
        if key.startswith("_") or key in ("transformers_version", "architectures", "model_type"):
            continue
        shrunk[key] = _shrink_value(key, value, layers, old_layers, specials)
    return shrunk


def _shrink_value(key: str, value: Any, layers: int, old_layers: int | None, specials) -> Any:
    if isinstance(value, dict) and "model_type" in value:
        tower = "text" in key or "decoder" in key or key == "llm_config"
        shrunk = _shrink(value, layers if tower else 1, specials)
        return {"model_type": value["model_type"], **shrunk, **FAMILY_OVERRIDES.get(value["model_type"], {})}
    if key == "per_layer_config" and isinstance(value, dict):
        return {k: v for k, v in value.items() if int(k) < layers}
    if isinstance(value, list) and old_layers and len(value) == old_layers and old_layers != layers:
        return _mixed_prefix(value, layers)
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return _shrink_number(key, value, layers, specials)


def _shrink_number(key: str, value: int, layers: int, specials) -> int:
    if key.endswith(("token_id", "token_index")) and value >= _FIRST_SPECIAL:
        return next(specials)
    if key in _LAYER_KEYS:
        return layers
    if key in ("vocab_size", "unpadded_vocab_size") or key.endswith("vocab_size_per_layer_input"):
        return VOCAB
    if key in _EXPERTS:
        return min(value, 4)
    if key in _TOP_K:
        return min(value, 2)
    if key in _AT_MOST_ONE:
        return min(value, 1)
    if key in _POSITIONS:
        return min(value, 128)
    if key in _WINDOWS:
        return min(value, 4)
    if key in _AT_LEAST_ALL_TOKENS:
        return min(value, 16)
    if key in _HEADS_PER_STATE:
        return 8
    if key == "num_kv_shared_layers":
        return min(value, 1)
    for size, keys in _SIZES.items():
        if key in keys:
            return min(value, size)
    return value


def _mixed_prefix(values: list, count: int) -> list:
    """The first ``count`` entries, with the last one replaced so that two kinds appear where the list had two."""
    prefix = list(values[:count])
    others = [v for v in values if v != prefix[0]]
    if all(v == prefix[0] for v in prefix) and others:
        prefix[-1] = others[0]
    return prefix
