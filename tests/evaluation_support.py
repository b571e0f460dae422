"""Shared pieces of the evaluation tests: the data directory, a tiny tokenizer and a tiny model that fits it."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from conftest import shared_data_dir
from tiny_models import tiny_model

TOKENIZER_VOCAB = 300
_CORPUS = ["Question: Which of these is a source of energy for plants? Answer: sunlight, water, soil."] * 20


def data_dir() -> Path:
    """``$LAYERPRUNE_DATA`` or ``<repo>/../shared/data``; a test calling this carries ``@pytest.mark.shared_data``."""
    return shared_data_dir()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (≤ 300 ids) trained in memory, so any text encodes offline."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>")


def tiny_lm(family: str = "llama", **overrides) -> PreTrainedModel:
    """A 4-layer tiny model whose vocabulary covers :func:`tiny_tokenizer`."""
    return tiny_model(family, vocab_size=TOKENIZER_VOCAB, **overrides)
