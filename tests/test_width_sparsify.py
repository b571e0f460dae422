"""Unstructured and 2:4 sparsity with layer-wise allocations: closed forms, patterns, zero fractions, bad input."""

from __future__ import annotations

import pytest
import torch

from layerprune.calibration import CalibrationConfig
from layerprune.errors import UserError
from layerprune.models import decoder_layers
from layerprune.width import SparsifyConfig, sparsify
from layerprune.width.allocation_alpha import hill_alpha
from layerprune.width.allocation_owl import outlier_ratio
from layerprune.width.sparse import SPARSE_PRUNERS, SparseRequest, spread
from layerprune.width.sparsify import linear_targets
from model_checks import assert_cache_consistent, assert_reloads_equal
from tiny_models import tiny_model, tiny_tokenizer

CALIBRATION = CalibrationConfig(samples=4, seq_len=32)


def _request(seed: int = 0, out: int = 6, dim: int = 16, sparsity: float = 0.5, pattern: str = "unstructured"):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, dim, generator=generator, dtype=torch.float64)
    inputs = torch.randn(dim, 40, generator=generator, dtype=torch.float64) * torch.linspace(0.1, 3, dim)[:, None]
    return SparseRequest(weight, 2 * inputs @ inputs.T / 40, sparsity, pattern, damp=0.0), inputs


def test_wanda_zeroes_the_lowest_weight_times_input_norm_in_each_row():
    request, inputs = _request()
    scores = request.weight.abs() * inputs.pow(2).sum(1).sqrt()
    pruned = SPARSE_PRUNERS.get("wanda")(request)
    for row in range(6):
        expected = set(torch.argsort(scores[row])[:8].tolist())
        assert set(torch.nonzero(pruned[row] == 0).flatten().tolist()) == expected
    kept = pruned != 0
    assert torch.equal(pruned[kept], request.weight[kept])


@pytest.mark.parametrize("pruner", ["wanda", "sparsegpt", "magnitude"])
def test_two_four_holds_in_every_group(pruner):
    request, _ = _request(pattern="2:4")
    pruned = SPARSE_PRUNERS.get(pruner)(request)
    assert torch.all((pruned.reshape(6, -1, 4) == 0).sum(-1) == 2)


def test_sparsegpt_reconstructs_better_than_wanda_at_the_same_sparsity():
    request, inputs = _request(seed=2, sparsity=0.6)
    request.mask = "row"  # every row at round(0.6 · 16), as Wanda
    errors = {}
    for name in ("wanda", "sparsegpt"):
        pruned = SPARSE_PRUNERS.get(name)(request)
        assert torch.all((pruned == 0).sum(1) == round(0.6 * 16))
        errors[name] = ((pruned - request.weight) @ inputs).pow(2).sum()
    assert errors["sparsegpt"] < errors["wanda"]


def test_spread_has_the_target_mean_and_the_lambda_range():
    sparsities = spread([3.0, 1.0, 2.0, 7.0], 0.6, 0.1)
    assert sum(sparsities) / 4 == pytest.approx(0.6)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.2)
    assert sparsities[3] == max(sparsities)


def test_outlier_ratio_and_hill_alpha_closed_forms():
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0]])
    assert outlier_ratio([scores], 5.0) == pytest.approx(0.1)  # mean 10.9, one element above 54.5
    weight = torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5]).sqrt())  # eigenvalues of WᵀW: 4, 2, 1, 0.5
    expected = 1 + 2 / (torch.log(torch.tensor(4.0)) + torch.log(torch.tensor(2.0)))  # k = 2, λ_k = 1
    assert hill_alpha(weight, "median") == pytest.approx(float(expected))


@pytest.mark.parametrize("allocation", ["uniform", "owl", "alpha"])
@pytest.mark.parametrize("pruner", ["wanda", "sparsegpt"])
def test_zero_fraction_per_layer_equals_its_allocation_whose_mean_is_the_target(pruner, allocation, tmp_path):
    model = tiny_model("qwen3")
    config = SparsifyConfig(pruner=pruner, sparsity=0.6, allocation=allocation)
    result = sparsify(model, tiny_tokenizer(), config, CALIBRATION)
    assert sum(result.sparsities) / len(result.sparsities) == pytest.approx(0.6)
    assert (len(set(result.sparsities)) == 1) == (allocation == "uniform")
    narrowest = min(lin.in_features for lin in linear_targets(decoder_layers(model)[0]).values())
    for wanted, got in zip(result.sparsities, result.achieved, strict=True):
        assert abs(wanted - got) <= 0.5 / narrowest  # each row zeroes round(S_l · in) weights
    if allocation == "owl":
        assert_cache_consistent(assert_reloads_equal(model, tmp_path / "m"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(sparsity=1.0), "sparsity: input should be less than 1"),
        (dict(sparsity=0.0), "sparsity: input should be greater than 0"),
        (dict(pattern="2:4", sparsity=0.7), "2:4 pattern is 50"),
        (dict(allocation="owel"), "did you mean"),
    ],
)
def test_bad_sparsify_input_is_a_user_error(overrides, message):
    with pytest.raises(UserError, match=f"(?i){message}"):
        SparsifyConfig(**overrides)


def test_two_four_on_a_dimension_not_divisible_by_four_is_a_user_error():
    model = tiny_model("llama", intermediate_size=66)
    with pytest.raises(UserError, match="divisible by 4"):
        sparsify(model, tiny_tokenizer(), SparsifyConfig(pattern="2:4"), CALIBRATION)
