"""Cached removal metrics (ppl, sleb) against the naive rebuild-per-candidate references."""

from __future__ import annotations

import math

import pytest
import torch

from layerprune.metrics import score
from layerprune.metrics.layerwise import LayerwisePass, ResidentLayers
from layerprune.metrics.nll import predicted_positions, token_nll
from layerprune.metrics.removal import RemovalSearch
from metric_fixtures import IDENTITY_LAYER, greedy_calibration, identity_layer_model, random_calibration
from reference_metrics import naive_mean_nll, naive_ppl, naive_removal_nll, naive_sleb_order
from tiny_models import tiny_model, token_batch


def batches_of(calibration, batch_size: int = 2):
    return list(calibration.batches(batch_size))


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen3", "gpt2", "opt"])
def test_cached_ppl_equals_rebuilding_the_model_per_layer(family):
    model = tiny_model(family)
    calibration = random_calibration(samples=3)
    cached = score(model, metrics=["ppl"], calib=calibration, batch_size=2, progress=False).get("ppl").scores
    assert cached == pytest.approx(naive_ppl(model, batches_of(calibration)), rel=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_removal_passes_after_removals_equal_rebuilding(family):
    types = ["sliding_attention", "full_attention"] * 2 + ["sliding_attention"]
    model = tiny_model(family, num_hidden_layers=5, layer_types=types)
    calibration = random_calibration(samples=3)
    search = RemovalSearch(LayerwisePass(ResidentLayers(model), calibration, batch_size=2, progress=False))
    table = search.nll_table([4], "")
    assert table[4] == pytest.approx(naive_removal_nll(model, batches_of(calibration), [4]), rel=1e-5)
    search.remove(1)
    table = search.nll_table([0, 2, 4], "")
    for layer in (0, 2, 4):
        expected = naive_removal_nll(model, batches_of(calibration), [1, layer])
        assert table[layer] == pytest.approx(expected, rel=1e-5), layer
    search.remove(3)
    expected = naive_removal_nll(model, batches_of(calibration), [1, 3, 2])
    assert search.nll_table([2], "")[2] == pytest.approx(expected, rel=1e-5)


def test_cached_sleb_equals_naive_greedy():
    model = tiny_model("qwen2", num_hidden_layers=6)
    calibration = random_calibration(samples=3)
    scores = score(model, metrics=["sleb"], calib=calibration, sleb_steps=3, progress=False).get("sleb")
    expected = naive_sleb_order(model, batches_of(calibration), steps=3)
    assert [scores.scores[i] for i in expected] == [0.0, 1.0, 2.0]
    assert scores.removal_order(3) == sorted(expected)


def test_identity_layer_goes_first_for_ppl_and_sleb():
    model = identity_layer_model()
    calibration = greedy_calibration(model)
    scores = score(model, metrics=["ppl", "sleb"], calib=calibration, sleb_steps=1, progress=False)
    full = math.exp(naive_mean_nll(model, batches_of(calibration)))
    assert scores.get("ppl").scores[IDENTITY_LAYER] == pytest.approx(full, rel=1e-6)
    assert scores.removal_order("ppl", 1) == [IDENTITY_LAYER]
    assert scores.removal_order("sleb", 1) == [IDENTITY_LAYER]


def test_sleb_respects_exclusion_and_ranks_the_rest():
    model = identity_layer_model()
    calibration = greedy_calibration(model)
    scores = score(model, metrics=["sleb"], calib=calibration, sleb_steps=1, exclude_first=3, progress=False)
    values = scores.get("sleb").scores
    assert values[3] == 0.0 and values[:3] == [4.0, 5.0, 6.0]
    with pytest.raises(ValueError, match="cannot run 2 steps"):
        score(model, metrics=["sleb"], calib=calibration, sleb_steps=2, exclude_first=3, progress=False)


def test_token_nll_is_accurate_on_a_large_vocabulary():
    model = tiny_model("llama", vocab_size=50_000)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # logits as large as a trained model's
    ids = token_batch(2, 24, seed=4)
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    with torch.no_grad():
        nll, count = token_nll(model, ids, mask)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].double()
    valid = predicted_positions(mask)
    expected = torch.nn.functional.cross_entropy(logits[valid], ids[:, 1:][valid], reduction="sum")
    assert count == 23 + 19
    # logsumexp − target: 4e-8 off; cross_entropy on [tokens, vocab] 4e-7, on [batch, vocab, seq] 4e-6
    assert float(nll) == pytest.approx(float(expected), rel=1e-7)


def test_a_removal_pass_shows_its_layers_and_then_its_head_work(capsys):
    """The final norm + head of every candidate (≈ 40 % of a Qwen pass) has its own bar after the layers'."""
    model = tiny_model("llama", num_hidden_layers=3)
    passes = LayerwisePass(ResidentLayers(model), random_calibration(samples=2), batch_size=2, progress=True)
    RemovalSearch(passes).nll_table([0, 1, 2], "sleb step 1/1")
    bars = capsys.readouterr().err
    assert "sleb step 1/1: 100%" in bars and "3/3" in bars
    assert bars.index("sleb step 1/1: final norm + head") > bars.index("sleb step 1/1: 100%")
