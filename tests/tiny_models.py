"""Tiny random models, one per supported family, built from configs (no downloads).

``TINY_CONFIGS`` maps a family to the config kwargs of a 4-layer model with a small
vocabulary (``gemma3`` is the multimodal model, with a one-layer vision tower);
:func:`tiny_model` builds it with a fixed seed. Gemma 2/3 and Qwen get mixed
per-layer attention types so that surgery bugs in ``layer_types`` are visible.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

VOCAB = 96
_TOKENS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
_COMMON = dict(
    **_TOKENS,
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_hidden_layers=4,
    max_position_embeddings=128,
)
_SLIDING4 = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]

TINY_CONFIGS: dict[str, dict] = {
    "llama": dict(_COMMON),
    "mistral": dict(_COMMON, sliding_window=None),
    "qwen2": dict(_COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=2),
    "qwen3": dict(_COMMON, head_dim=8, use_sliding_window=True, sliding_window=4, max_window_layers=2),
    "gemma": dict(_COMMON, head_dim=8),
    "gemma2": dict(_COMMON, head_dim=8, sliding_window=4, layer_types=_SLIDING4),
    "gemma3_text": dict(_COMMON, head_dim=8, sliding_window=4, layer_types=_SLIDING4),
    "gemma3": dict(
        text_config=dict(_COMMON, head_dim=8, sliding_window=4, layer_types=_SLIDING4),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        mm_tokens_per_image=4,
        image_token_index=95,
        boi_token_index=93,
        eoi_token_index=94,
        **_TOKENS,
    ),
    "phi3": dict(_COMMON),
    "phi": dict(_COMMON),
    "olmo": dict(_COMMON),
    "olmo2": dict(_COMMON),
    "granite": dict(_COMMON),
    "cohere": dict(_COMMON),
    "stablelm": dict(_COMMON),
    "helium": dict(_COMMON, head_dim=8),
    "glm": dict(_COMMON, head_dim=8),
    "starcoder2": dict(_COMMON, sliding_window=None),
    "exaone4": dict(_COMMON, head_dim=8, sliding_window=4, layer_types=_SLIDING4),
    "smollm3": dict(
        _COMMON, no_rope_layers=[1, 0, 1, 1], layer_types=_SLIDING4, sliding_window=4, use_sliding_window=True
    ),
    "mixtral": dict(_COMMON, num_local_experts=2, num_experts_per_tok=1, sliding_window=None),
    "qwen2_moe": dict(
        _COMMON,
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        mlp_only_layers=[1, 3],
    ),
    "gpt2": dict(**_TOKENS, vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4, n_positions=128),
    "gpt_neox": dict(
        **_TOKENS,
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=4,
        max_position_embeddings=128,
    ),
    "opt": dict(
        bos_token_id=2,
        eos_token_id=2,
        vocab_size=VOCAB,
        hidden_size=32,
        ffn_dim=64,
        num_attention_heads=4,
        num_hidden_layers=4,
        max_position_embeddings=128,
        word_embed_proj_dim=32,
        pad_token_id=1,
    ),
}
FAMILIES = sorted(TINY_CONFIGS)


def tiny_config(family: str, **overrides):
    return AutoConfig.for_model(family, **{**TINY_CONFIGS[family], **overrides})


def tiny_model(family: str = "llama", seed: int = 0, **overrides) -> PreTrainedModel:
    """A randomly initialised 4-layer model of ``family`` in eval mode (fp32, CPU)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **overrides), attn_implementation="eager")
    model.config._name_or_path = f"tiny-{family}"
    return model.eval()


def token_batch(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=generator)


def tiny_tokenizer(bos: bool = False) -> PreTrainedTokenizerFast:
    """A character-level tokenizer matching the tiny models' vocabulary (no downloads).

    Ids 0/1/2 are pad/BOS/EOS; printable ASCII characters get ids 3..95 (space is 3); other
    characters (newline included) read as pad. ``bos=True`` puts BOS in front of text by
    default, as Llama 2's tokenizer does.
    """
    characters = [chr(code) for code in range(32, 32 + VOCAB - 3)]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(characters)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_model_dir(path, family: str = "llama", seed: int = 0, **overrides):
    """Save a tiny model with its tokenizer to ``path`` (a directory ``load_model`` accepts)."""
    model = tiny_model(family, seed=seed, **overrides)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return model
