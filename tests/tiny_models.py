"""Tiny random models, one per supported family, built from configs (no downloads).

``TINY_CONFIGS`` maps a family to the config kwargs of a 4-layer model with a small
vocabulary (``gemma3`` is the multimodal model, with a one-layer vision tower);
:func:`tiny_model` builds it with a fixed seed. Gemma 2/3 and Qwen get mixed
per-layer attention types so that surgery bugs in ``layer_types`` are visible.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
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


_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
_CHARACTERS = " etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,;:!?'\"()-\n"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer whose ids fit the tiny models' vocabulary (pad 0, bos 1, eos 2)."""
    vocab = {token: index for index, token in enumerate(_SPECIALS + list(dict.fromkeys(_CHARACTERS)))}
    assert len(vocab) <= VOCAB
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_model_dir(path, family: str = "llama", seed: int = 0, **overrides):
    """Save a tiny model with its tokenizer to ``path`` (a directory ``load_model`` accepts)."""
    model = tiny_model(family, seed=seed, **overrides)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return model
