"""Perplexity equals a direct loss computation on the same windows."""

from __future__ import annotations

import math

import pytest
import torch

from evaluation_support import data_dir, tiny_lm, tiny_tokenizer
from layerprune.errors import UserError
from layerprune.evaluation.perplexity import PerplexityOptions, load_text, perplexity, token_windows, wikitext_rows

TEXT = "Question: Which of these is a source of energy for plants? Answer: sunlight, water, soil. " * 40


def direct_ppl(model, tokenizer, text: str, seq_len: int) -> float:
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    count = ids.numel() // seq_len
    with torch.no_grad():
        losses = [model(window[None], labels=window[None]).loss for window in ids[: count * seq_len].view(count, -1)]
    return math.exp(torch.stack(losses).mean().item())


def test_perplexity_equals_direct_loss(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    model, tokenizer = tiny_lm(), tiny_tokenizer()
    report = perplexity(model, tokenizer, str(path), PerplexityOptions(seq_len=64))
    assert report["ppl"] == pytest.approx(direct_ppl(model, tokenizer, TEXT, 64), rel=1e-5)
    assert report["seq_len"] == 64
    assert report["predicted_tokens"] == report["windows"] * 63
    assert report["windows"] == report["text_tokens"] // 64
    assert report["bos"] == "none"


def test_window_is_capped_at_the_model_context(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    report = perplexity(tiny_lm(), tiny_tokenizer(), str(path), PerplexityOptions(seq_len=2048, max_windows=2))
    assert report["seq_len"] == 128  # tiny models have max_position_embeddings = 128
    assert report["windows"] == 2


def test_token_windows_drop_the_remainder():
    windows = token_windows(torch.arange(10), 3)
    assert windows.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(UserError, match="fewer than one window"):
        token_windows(torch.arange(2), 3)


@pytest.mark.shared_data
def test_wikitext2_local_text_rebuilds_the_hub_rows(monkeypatch):
    rows = wikitext_rows(data_dir() / "wikitext2" / "raw" / "wiki.test.raw")
    assert len(rows) == 4358 and sum(row == "" for row in rows) == 1467
    source = load_text("wikitext2", data_dir())
    assert source.text == "\n\n".join(rows) and source.join == "\\n\\n"
    monkeypatch.delenv("LAYERPRUNE_DATA", raising=False)
    embedded = load_text("wikitext2")  # the whole test split is embedded: the same text
    assert embedded.text == source.text and embedded.source.startswith("embedded")


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(UserError, match=r"did you mean 'wikitext2'.*c4, ptb, wikitext2"):
        load_text("wikitext3")
