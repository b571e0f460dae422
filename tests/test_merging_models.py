"""Merging real (tiny) models: cached candidate evaluation = deep copy, surgery results reload and decode."""

import pytest
import torch

from layerprune.merging import (
    CachedEvaluator,
    LayerStack,
    MergeConfig,
    deep_copy_final_hidden,
    format_groups,
    merge_model,
)
from layerprune.models import decoder_layers, num_layers
from layerprune.provenance import get_provenance, read_record
from model_checks import assert_cache_consistent, assert_reloads_equal
from tiny_models import FAMILIES, TINY_CONFIGS, tiny_model, token_batch


def deep_tiny(family: str, layers: int):
    """A tiny model of ``family`` with ``layers`` layers (per-layer attention types repeated)."""
    overrides = {"n_layer" if family == "gpt2" else "num_hidden_layers": layers}
    for key in ("layer_types", "no_rope_layers"):
        if key in TINY_CONFIGS[family]:
            overrides[key] = (TINY_CONFIGS[family][key] * layers)[:layers]
    if "mlp_only_layers" in TINY_CONFIGS[family]:
        overrides["mlp_only_layers"] = []  # every layer MoE, so any run of layers can be merged
    return tiny_model(family, **overrides)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    padded = torch.ones(2, 12, dtype=torch.long)
    padded[1, 9:] = 0
    return [(token_batch(2, 12, seed=1), torch.ones(2, 12, dtype=torch.long)), (token_batch(2, 12, seed=2), padded)]


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_candidate_evaluation_equals_deep_copy(family: str) -> None:
    model = deep_tiny(family, 6)
    evaluator = CachedEvaluator(model, _batches())
    stack = LayerStack.initial(decoder_layers(model), "rdsc").merge(3, 4).merge(1, 2)
    cached = evaluator.final_hidden(stack)
    naive = deep_copy_final_hidden(model, stack, _batches())
    for got, expected in zip(cached, naive, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cached[0], evaluator.reference[0], atol=1e-3)  # the merge changed something


def test_merge_model_threshold_mode_records_groups() -> None:
    model = tiny_model("llama", num_hidden_layers=6)
    result = merge_model(model, _batches(), MergeConfig(threshold=-1.0, operator="mean"))
    assert [(g.first, g.last) for g in result.stack.groups] == [(0, 4), (5, 5)]
    assert num_layers(model) == 2 and format_groups(result.stack) == ["[0–4] → 0"]
    step = get_provenance(model).steps[-1]
    assert step["stage"] == "merge" and step["merged_source_groups"] == [[0, 4]]
    assert step["operator"] == "mean" and step["steps"][0]["layers"] == [0, 4]


@pytest.mark.parametrize(("family", "method"), [("llama", "slm"), ("qwen3", "laco"), ("gemma2", "slm")])
def test_target_mode_removes_exactly_k_and_result_reloads_and_decodes(family: str, method: str, tmp_path) -> None:
    model = deep_tiny(family, 8)
    config = MergeConfig(method=method, num_layers=3)
    config.laco.merge_layers, config.laco.interval = 2, 1
    result = merge_model(model, _batches(), config)
    assert result.target.exact and result.stack.removed == 3 and num_layers(model) == 5
    assert -1.0 <= result.threshold <= 1.0
    reloaded = assert_reloads_equal(model, tmp_path / "merged")
    assert read_record(tmp_path / "merged")["num_layers"] == 5
    assert_cache_consistent(model)
    assert_cache_consistent(reloaded)


def test_target_mode_memoises_evaluations() -> None:
    model = tiny_model("llama", num_hidden_layers=8)
    result = merge_model(model, _batches(), MergeConfig(num_layers=2))
    distinct_windows = sum(1 for high in range(1, 7) for _ in range(high))  # an upper bound on SLM's candidates
    assert result.evaluations <= distinct_windows * 3
