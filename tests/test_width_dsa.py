"""DSA: the allocation function's mean, the evolutionary search resuming after a kill, reuse by name."""

from __future__ import annotations

import json

import pytest
import torch

from layerprune.calibration import CalibrationConfig
from layerprune.width import SparsifyConfig, sparsify
from layerprune.width.allocation_dsa import AllocationFunction, allocate_with, evolve, layer_scores, load_function
from layerprune.width.sparse import AllocationContext
from tiny_models import tiny_model, tiny_tokenizer


def _context(tmp_path, **overrides) -> AllocationContext:
    generator = torch.Generator().manual_seed(0)
    weights = [{"a": torch.randn(8, 16, generator=generator) * (1 + i)} for i in range(5)]
    norms = [{"a": torch.rand(16, generator=generator) + i} for i in range(5)]
    config = SparsifyConfig(sparsity=0.6, allocation="dsa", dsa_population=4, dsa_generations=3, **overrides)
    context = AllocationContext(weights, norms, config)
    context.evaluate = lambda sparsities: 1.0 + sum((s - 0.55) ** 2 for s in sparsities[:2]) + sparsities[-1]
    return context


def test_allocation_mean_equals_the_target_for_any_function(tmp_path):
    context = _context(tmp_path)
    for function in (AllocationFunction(), AllocationFunction("magnitude", "square", "std", "log", 1, 0.15)):
        sparsities = allocate_with(function, context)
        assert sum(sparsities) / 5 == pytest.approx(0.6)
        assert max(sparsities) - min(sparsities) == pytest.approx(2 * function.lam, abs=1e-9) or function.lam == 0


def test_layer_score_of_the_outlier_function_is_the_owl_outlier_ratio(tmp_path):
    context = _context(tmp_path)
    scores = layer_scores(AllocationFunction(), context)
    for index, score in enumerate(scores):
        element = context.element_scores(index)[0]
        assert score == pytest.approx(float((element > 5 * element.mean()).double().mean()))


class Killed(Exception):
    pass


def test_search_resumes_after_a_kill_and_finds_the_same_function(tmp_path):
    uninterrupted = evolve(_context(tmp_path), tmp_path / "full.json")
    context = _context(tmp_path)
    original, calls = context.evaluate, []

    def dies_after_five(sparsities):
        if len(calls) == 5:
            raise Killed
        calls.append(1)
        return original(sparsities)

    context.evaluate = dies_after_five
    with pytest.raises(Killed):
        evolve(context, tmp_path / "resumed.json")
    assert len(json.loads((tmp_path / "resumed.json").read_text())["fitness"]) == 5
    context.evaluate = original
    assert evolve(context, tmp_path / "resumed.json") == uninterrupted
    full = json.loads((tmp_path / "full.json").read_text())
    assert json.loads((tmp_path / "resumed.json").read_text()) == full and full["generation"] == 3


def test_sparsify_with_dsa_saves_the_function_and_reuses_it_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path / "cache"))
    calibration = CalibrationConfig(samples=4, seq_len=32)
    config = SparsifyConfig(
        sparsity=0.5,
        allocation="dsa",
        dsa_function="tiny",
        dsa_generations=1,
        dsa_population=3,
        dsa_samples=2,
    )
    first = sparsify(tiny_model("llama"), tiny_tokenizer(), config, calibration)
    assert load_function("tiny") == AllocationFunction(**first.function)
    assert sum(first.sparsities) / 4 == pytest.approx(0.5)
    search = tmp_path / "cache" / "dsa" / "functions" / "tiny.search.json"
    before = search.read_text()
    second = sparsify(tiny_model("llama"), tiny_tokenizer(), config, calibration)
    assert second.sparsities == first.sparsities and search.read_text() == before
