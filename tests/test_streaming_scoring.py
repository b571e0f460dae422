"""Streamed scoring equals in-memory scoring; the one-pass removal scheme equals per-candidate evaluation."""

from __future__ import annotations

import pytest

from layerprune.errors import UserError
from layerprune.metrics import score
from layerprune.metrics.layerwise import LayerwisePass, ResidentLayers
from layerprune.models import load_model
from layerprune.streaming.scoring import stream_score, streamed_model
from metric_fixtures import random_calibration
from reference_metrics import naive_removal_nll
from tiny_models import tiny_model, tiny_model_dir

SIMILARITY_AND_REMOVAL = ["bi", "bi-global", "angular", "cka", "ppl", "sleb", "magnitude-l1", "magnitude-l2"]


def _assert_same_scores(streamed, in_memory) -> None:
    assert list(streamed.metrics) == list(in_memory.metrics)
    for name, expected in in_memory.metrics.items():
        assert streamed.metrics[name].scores == pytest.approx(expected.scores, rel=1e-5), name
        for n, block in (expected.blocks or {}).items():
            assert streamed.metrics[name].blocks[n] == pytest.approx(block, rel=1e-5, abs=1e-7), (name, n)
    for name, matrix in in_memory.similarity.items():
        for row, expected_row in zip(streamed.similarity[name], matrix, strict=True):
            assert row == pytest.approx(expected_row, rel=1e-5), name


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen3", "gpt2", "opt"])
def test_streamed_scores_equal_in_memory_scores(tmp_path, family) -> None:
    tiny_model_dir(tmp_path / "src", family)
    calibration = random_calibration(samples=3)
    model, tokenizer = load_model(str(tmp_path / "src"))
    settings = dict(calib=calibration, batch_size=2, sleb_steps=2, progress=False)
    in_memory = score(model, tokenizer, SIMILARITY_AND_REMOVAL, **settings)
    streamed = stream_score(str(tmp_path / "src"), SIMILARITY_AND_REMOVAL, **settings)
    _assert_same_scores(streamed, in_memory)
    assert streamed.model == in_memory.model


def test_states_beyond_the_budget_on_disk_give_the_same_scores(tmp_path) -> None:
    tiny_model_dir(tmp_path / "src", "llama")
    settings = dict(calib=random_calibration(samples=3), batch_size=1, progress=False)
    in_memory = stream_score(str(tmp_path / "src"), ["bi", "angular", "ppl"], **settings)
    on_disk = stream_score(str(tmp_path / "src"), ["bi", "angular", "ppl"], state_budget=0, **settings)
    _assert_same_scores(on_disk, in_memory)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_one_pass_removal_equals_naive_per_candidate_evaluation(family) -> None:
    types = ["sliding_attention", "full_attention"] * 2 + ["sliding_attention"]
    overrides = {"layer_types": types} if family == "gemma3_text" else {}
    model = tiny_model(family, num_hidden_layers=5, **overrides)
    calibration = random_calibration(samples=3)
    passes = LayerwisePass(ResidentLayers(model), calibration, batch_size=2, progress=False)
    batches = list(calibration.batches(2))
    for removed in (set(), {1, 3}):
        candidates = [i for i in range(5) if i not in removed]
        table = passes.nll_table(removed, candidates, "")
        for layer in candidates:
            expected = naive_removal_nll(model, batches, sorted(removed | {layer}))
            assert table[layer] == pytest.approx(expected, rel=1e-5), (removed, layer)


def test_one_pass_loads_each_layer_once_per_pass(tmp_path) -> None:
    tiny_model_dir(tmp_path / "src", "llama", num_hidden_layers=6)
    streamed = streamed_model(str(tmp_path / "src"))
    settings = dict(calib=random_calibration(samples=3), batch_size=2, progress=False)
    score(streamed.model, None, ["bi", "angular", "cka", "ppl"], layers=streamed, **settings)
    assert streamed.loads == 6  # similarity and every removal candidate: one pass
    streamed.loads = 0
    score(streamed.model, None, ["sleb"], layers=streamed, sleb_steps=3, **settings)
    assert streamed.loads == 6 + 5 + 4  # a pass per round; removed layers are not loaded


def test_taylor_refuses_to_stream(tmp_path) -> None:
    tiny_model_dir(tmp_path / "src", "llama")
    with pytest.raises(UserError, match="taylor and taylor\\+ need gradients through the whole model"):
        stream_score(str(tmp_path / "src"), ["taylor"], calib=random_calibration(samples=2), progress=False)
