"""The OBS math under SlimGPT and the width baselines, against closed forms on constructed problems."""

from __future__ import annotations

import math

import pytest
import torch

from layerprune.width.base import WIDTH_METHODS, ColumnRequest
from layerprune.width.obs import compensate, group_scores, halving_batches, obs_prune_groups
from layerprune.width.projections import LayerWidth
from layerprune.width.prune import plan_layer
from layerprune.width.schedule import layer_ratios, log_increase, solve_log_increase


def _problem(seed: int = 0, out: int = 5, dim: int = 8, tokens: int = 64):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, dim, generator=generator, dtype=torch.float64)
    inputs = torch.randn(dim, tokens, generator=generator, dtype=torch.float64)
    return weight, inputs, 2 * inputs @ inputs.T / tokens


def test_compensation_equals_the_joint_least_squares_optimum():
    weight, inputs, hessian = _problem()
    removed = torch.tensor([1, 4, 5])
    kept = torch.tensor([0, 2, 3, 6, 7])
    updated = compensate(weight, torch.linalg.inv(hessian), removed)
    # argmin_W' ‖W' X_R − W X‖²: the normal equations on the kept inputs
    optimum = torch.linalg.solve(inputs[kept] @ inputs[kept].T, inputs[kept] @ (weight @ inputs).T).T
    torch.testing.assert_close(updated[:, kept], optimum, atol=1e-10, rtol=0)
    assert torch.all(updated[:, removed] == 0)


def test_group_score_matches_its_closed_form_and_the_loss():
    weight, inputs, hessian = _problem(seed=1)
    inverse = torch.linalg.inv(hessian)
    groups = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    scores = group_scores(weight, inverse, groups, "exact")
    for g, columns in enumerate(groups):
        block = inverse[columns[:, None], columns[None, :]]
        closed = torch.trace(weight[:, columns] @ torch.linalg.inv(block) @ weight[:, columns].T)
        torch.testing.assert_close(scores[g], closed, atol=1e-10, rtol=0)
        loss = ((compensate(weight, inverse, columns) - weight) @ inputs).pow(2).sum() / inputs.shape[1]
        torch.testing.assert_close(loss, scores[g] / 2, atol=1e-10, rtol=0)


def test_single_column_score_is_slimgpt_epsilon():
    weight, _, hessian = _problem(seed=2)
    inverse = torch.linalg.inv(hessian)
    scores = group_scores(weight, inverse, torch.arange(8).reshape(-1, 1))
    torch.testing.assert_close(scores, weight.pow(2).sum(0) / torch.diagonal(inverse), atol=1e-10, rtol=0)


def test_greedy_removes_the_lowest_scoring_group_first_and_dead_columns_cost_nothing():
    weight, inputs, _ = _problem(seed=3)
    inputs[6] = 0  # a column that never fires
    hessian = 2 * inputs @ inputs.T / inputs.shape[1]
    removed, updated = obs_prune_groups(weight, hessian, torch.arange(8).reshape(-1, 1), [1, 1], damp=0.0)
    assert removed[0] == 6
    assert torch.all(updated[:, removed] == 0)


def test_halving_batches_shrink_and_sum_to_the_count():
    assert halving_batches(10) == [5, 3, 1, 1]
    assert sum(halving_batches(77)) == 77 and halving_batches(0) == []


def test_wanda_structured_and_magnitude_scores_equal_their_closed_forms():
    weight, inputs, hessian = _problem(seed=4)
    groups = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    norms = inputs.pow(2).sum(1).sqrt()
    wanda = torch.stack([(weight[:, g].abs() * norms[g]).sum() for g in groups])
    magnitude = torch.stack([weight[:, g].pow(2).sum() for g in groups])
    for name, scores in (("wanda", wanda), ("magnitude", magnitude)):
        removed, same = WIDTH_METHODS.get(name)(ColumnRequest(weight, hessian, groups, 2, "heads"))
        assert removed == torch.argsort(scores)[:2].tolist()
        assert same is weight


def test_incremental_pruning_ratio_matches_the_formula_with_the_models_own_depth():
    ratios = log_increase(30, 0.1, 0.6)
    for i, r in enumerate(ratios):
        assert r == pytest.approx(0.1 + 0.5 * math.log(i + 1) / math.log(30))
    assert ratios[0] == pytest.approx(0.1) and ratios[-1] == pytest.approx(0.6)


@pytest.mark.parametrize("bounds", [(None, None), (0.05, None), (None, 0.5)])
def test_target_mean_mode_hits_the_target(bounds):
    ratios = layer_ratios(30, "log-increase", 0.4, *bounds)
    assert sum(ratios) / 30 == pytest.approx(0.4)
    assert ratios == sorted(ratios)
    r0, r_max = solve_log_increase(30, 0.4, *bounds)
    assert ratios[0] == pytest.approx(r0) and ratios[-1] == pytest.approx(r_max)


def test_batched_removal_matches_recomputing_the_inverse_hessian_each_batch():
    weight, _, hessian = _problem(seed=5, dim=12)
    groups = torch.arange(12).reshape(-1, 1)
    removed, updated = obs_prune_groups(weight, hessian, groups, [3, 2], damp=0.0)
    expected, alive = weight.clone(), list(range(12))
    for size in (3, 2):
        inverse = torch.linalg.inv(hessian[alive][:, alive])
        scores = expected[:, alive].pow(2).sum(0) / torch.diagonal(inverse)
        chosen = torch.argsort(scores)[:size]
        expected[:, alive] = compensate(expected[:, alive], inverse, chosen)
        assert [alive[i] for i in chosen.tolist()] == removed[: 3 if size == 3 else 5][-size:]
        alive = [a for i, a in enumerate(alive) if i not in set(chosen.tolist())]
    torch.testing.assert_close(updated, expected, atol=1e-9, rtol=0)


def test_hessian_accumulator_full_and_diagonal_modes():
    from layerprune.width.obs import HessianAccumulator

    _, inputs, hessian = _problem(seed=6)
    full, diagonal = HessianAccumulator(8), HessianAccumulator(8, diagonal=True)
    for chunk in inputs.T.split(24):
        full.add(chunk[None])
        diagonal.add(chunk[None])
    torch.testing.assert_close(full.hessian(), hessian, atol=1e-12, rtol=0)
    torch.testing.assert_close(diagonal.hessian(), torch.diag(torch.diagonal(hessian)), atol=1e-12, rtol=0)


def test_plan_removes_the_ratio_of_the_layers_projection_parameters():
    # hidden 32, head_dim 8, 2 KV groups of 2 heads: a group holds 32·8·(2·2 + 2) = 1536 weights (q, o, k, v),
    # a channel 3·32 = 96 (gate, up, down); total 2·1536 + 64·96 = 9216
    assert plan_layer(LayerWidth(4, 2, 64), 8, 32, 0.25, 0) == (0, 24)  # round(0.5) = 0 groups, 2304 / 96 channels
    assert plan_layer(LayerWidth(4, 2, 64), 8, 32, 0.5, 0) == (1, 32)  # one group, (4608 − 1536) / 96 channels
