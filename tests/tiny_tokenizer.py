"""A character-level tokenizer matching the tiny models' vocabulary (no downloads).

Ids 0/1/2 are pad/BOS/EOS; printable ASCII characters get ids 3..95 (space is 3).
``bos=True`` makes the tokenizer put BOS in front of text by default, as Llama 2 does.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tiny_models import VOCAB


def tiny_tokenizer(bos: bool = False) -> PreTrainedTokenizerFast:
    characters = [chr(code) for code in range(32, 32 + VOCAB - 3)]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(characters)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
