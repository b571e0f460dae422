"""A character-level tokenizer whose ids fit the tiny models' vocabulary (96), with a chat template."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?'\"-#()<>|/_\n"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Each character maps to one id; ``<s>`` is prepended; pad 0, bos 1, eos 2."""
    vocab = {token: i for i, token in enumerate(_SPECIALS + list(_CHARS))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.add_special_tokens(_SPECIALS)
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.add_bos_token = True
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
