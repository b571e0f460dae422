"""Each width/sparsity method as its released code computes it, on cases small enough to work by hand.

For every step where layerprune has a named variant, one constructed case where the released
formula and the variant disagree, with the released answer written out here (not taken from
the implementation). Also the directions (more outliers / heavier tails → less sparsity),
relative damping, and SlimGPT's one-head-at-a-time greedy.
"""

from __future__ import annotations

import math

import pytest
import torch

from layerprune.calibration import CalibrationConfig
from layerprune.cli import build_parser
from layerprune.models import decoder_layers
from layerprune.width import SparsifyConfig, WidthConfig, sparsify, width_prune
from layerprune.width import slimgpt as slimgpt_module
from layerprune.width.allocation_alpha import _peak_window, alpha, hill_alpha, multiplicative
from layerprune.width.allocation_dsa import AllocationFunction, layer_scores
from layerprune.width.allocation_owl import outlier_ratio, owl
from layerprune.width.base import WIDTH_METHODS, ColumnRequest
from layerprune.width.obs import damped, group_scores, halving_batches, obs_prune_groups, released_batches
from layerprune.width.sparse import SPARSE_PRUNERS, AllocationContext, SparseRequest
from layerprune.width.sparsify import linear_targets
from tiny_models import tiny_model, tiny_tokenizer

F64 = torch.float64


# SlimGPT ------------------------------------------------------------------------------------


def _two_heads():
    """A = H⁻¹ block-diagonal: head 0's two inputs correlated (ρ = 0.8), head 1's independent."""
    inverse = torch.zeros(4, 4, dtype=F64)
    inverse[:2, :2] = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=F64)
    inverse[2:, 2:] = torch.eye(2, dtype=F64)
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.2]], dtype=F64)
    return weight, inverse, torch.tensor([[0, 1], [2, 3]])


def test_slimgpt_released_head_score_is_the_cholesky_diagonal_sum_and_picks_another_head():
    weight, inverse, groups = _two_heads()
    # L = chol([[1, .8], [.8, 1]]) = [[1, 0], [.8, .6]]: released Σ_j w_j² / L_jj² = 1/1 + 1/0.36
    released = [1 + 1 / 0.36, 1 + 1.44]
    # exact: w A_SS⁻¹ wᵀ = [1, 1]·[[1, .8], [.8, 1]]⁻¹·[1, 1]ᵀ = 2 / (1 + ρ)
    exact = [2 / 1.8, 1 + 1.44]
    torch.testing.assert_close(group_scores(weight, inverse, groups), torch.tensor(released, dtype=F64))
    torch.testing.assert_close(group_scores(weight, inverse, groups, "exact"), torch.tensor(exact, dtype=F64))
    hessian = torch.linalg.inv(inverse)
    method = WIDTH_METHODS.get("slimgpt")
    removed, updated = method(ColumnRequest(weight, hessian, groups, 1, "heads", damp=0.0))
    assert removed == [1]  # 2.44 < 3.78
    torch.testing.assert_close(updated, torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=F64))  # A_{S,head 0} = 0
    removed, updated = method(ColumnRequest(weight, hessian, groups, 1, "heads", damp=0.0, head_score="exact"))
    assert removed == [0]  # 1.11 < 2.44
    torch.testing.assert_close(updated, torch.tensor([[0.0, 0.0, 1.0, 1.2]], dtype=F64))


def _released_head_scores(weight: torch.Tensor, hessian: torch.Tensor, alive: list[int]) -> list[float]:
    """SlimGPT's released head score on the alive heads (two columns each), from (H_RR)⁻¹."""
    columns = [c for g in alive for c in (2 * g, 2 * g + 1)]
    inverse = torch.linalg.inv(hessian[columns][:, columns])
    scores = []
    for k in range(len(alive)):
        factor = torch.linalg.cholesky(inverse[2 * k : 2 * k + 2, 2 * k : 2 * k + 2])
        w = weight[:, columns[2 * k : 2 * k + 2]]
        scores.append(float((w.pow(2).sum(0) / torch.diagonal(factor).pow(2)).sum()))
    return scores


def test_slimgpt_removes_heads_one_at_a_time_rescoring_after_each():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 8, generator=generator, dtype=F64)
    inputs = torch.randn(8, 12, generator=generator, dtype=F64)
    inputs = inputs + 0.9 * torch.randn(1, 12, generator=generator, dtype=F64)
    hessian = 2 * inputs @ inputs.T / 12
    groups = torch.arange(8).reshape(4, 2)
    first_scores = _released_head_scores(weight, hessian, [0, 1, 2, 3])
    first = min(range(4), key=first_scores.__getitem__)
    alive = [g for g in range(4) if g != first]
    inverse, drop = torch.linalg.inv(hessian), [2 * first, 2 * first + 1]
    compensated = weight - weight[:, drop] @ torch.linalg.solve(inverse[drop][:, drop], inverse[drop])  # OBS ΔW
    second_scores = _released_head_scores(compensated, hessian, alive)  # scored again after the first removal
    second = alive[min(range(3), key=second_scores.__getitem__)]
    one_pass = sorted(range(4), key=first_scores.__getitem__)[:2]
    assert sorted([first, second]) != sorted(one_pass)  # the case tells the two schedules apart
    removed, _ = WIDTH_METHODS.get("slimgpt")(ColumnRequest(weight, hessian, groups, 2, "heads", damp=0.0))
    assert removed == [first, second]


def test_slimgpt_released_channel_batches_shrink_to_a_floor_of_64():
    # b = (1000 − 512)//2 = 244; then (244 − 512)//2 < 0, so 64 until the last 1000 − 244 − 11·64 = 52
    assert released_batches(1000) == [244] + [64] * 11 + [52]
    # b = (3000 − 512)//2 = 1244 → capped at 1024; then (1244 − 512)//2 = 366; then 64s and the rest 10
    assert released_batches(3000) == [1024, 366] + [64] * 25 + [10]
    assert released_batches(40) == [40] and released_batches(0) == []
    assert halving_batches(70) == [35, 18, 9, 4, 2, 1, 1]


BATCHES = [("released", "channels", [64, 6]), ("halving", "channels", [35, 18, 9, 4, 2, 1, 1])]


@pytest.mark.parametrize(("option", "kind", "expected"), [*BATCHES, ("released", "heads", [1] * 70)])
def test_slimgpt_passes_its_batches_and_options_to_obs(monkeypatch, option, kind, expected):
    calls = []
    monkeypatch.setattr(slimgpt_module, "obs_prune_groups", lambda *args: calls.append(args) or ([], args[0]))
    weight, hessian = torch.zeros(2, 80, dtype=F64), torch.eye(80, dtype=F64)
    request = ColumnRequest(weight, hessian, torch.arange(80).reshape(-1, 1), 70, kind, 0.3, "exact", option)
    slimgpt_module.slimgpt(request)
    assert calls[0][3] == expected and calls[0][4] == 0.3 and calls[0][5] == "exact"


def test_obs_damping_is_relative_to_the_mean_diagonal():
    hessian = torch.diag(torch.tensor([2.0, 4.0], dtype=F64))
    damped_hessian, _ = damped(hessian, torch.ones(1, 2, dtype=F64), 0.5)
    torch.testing.assert_close(torch.diagonal(damped_hessian), torch.tensor([3.5, 5.5], dtype=F64))  # + 0.5 · 3
    # H = diag(1, 3), damp 0.2 · mean 2 = 0.4: ε_j = w_j² · H_jj = [2.56 · 1.4, 1 · 3.4] = [3.584, 3.4] → column 1
    # (absolute damping, + 0.2: [3.072, 3.2] → column 0)
    weight = torch.tensor([[1.6, 1.0]], dtype=F64)
    removed, updated = obs_prune_groups(
        weight, torch.diag(torch.tensor([1.0, 3.0], dtype=F64)), torch.tensor([[0], [1]]), [1], 0.2
    )
    assert removed == [1]
    torch.testing.assert_close(updated, torch.tensor([[1.6, 0.0]], dtype=F64))


# SparseGPT ----------------------------------------------------------------------------------


def _sparsegpt(weight, hessian_diagonal, sparsity, damp=0.0, mask="block"):
    request = SparseRequest(
        torch.tensor(weight, dtype=F64), torch.diag(torch.tensor(hessian_diagonal, dtype=F64)), sparsity, damp=damp
    )
    request.mask = mask
    return SPARSE_PRUNERS.get("sparsegpt")(request)


def test_sparsegpt_saliency_divides_by_the_squared_cholesky_diagonal():
    # H diagonal → U = diag(1/√H_jj), no error spreads; saliency w²/U_jj² = w²·H_jj = [1, 1.44, 4, 9]
    # (w²/U_jj would be [1, 0.36, 4, 9]); int(4 · 0.2) = 0 → the one lowest goes: column 0
    pruned = _sparsegpt([[1.0, 0.3, 2.0, 3.0]], [1.0, 16.0, 1.0, 1.0], 0.2)
    torch.testing.assert_close(pruned, torch.tensor([[0.0, 0.3, 2.0, 3.0]], dtype=F64))


def test_sparsegpt_two_four_picks_by_the_same_saliency():
    # w²·H_jj = [1, 1.44, 1.21, 9]: columns 0 and 2 go (w²·√H_jj = [1, 0.36, 1.21, 9] would take 0 and 1)
    request = SparseRequest(
        torch.tensor([[1.0, 0.3, 1.1, 3.0]], dtype=F64),
        torch.diag(torch.tensor([1.0, 16.0, 1.0, 1.0], dtype=F64)),
        0.5,
        "2:4",
        damp=0.0,
    )
    pruned = SPARSE_PRUNERS.get("sparsegpt")(request)
    torch.testing.assert_close(pruned, torch.tensor([[0.0, 0.3, 0.0, 3.0]], dtype=F64))


def test_sparsegpt_damping_is_relative_to_the_mean_diagonal():
    # damp 0.2 · mean(1, 16, 1, 1) = 0.95 → H = [1.95, 16.95, 1.95, 1.95]; w²·H = [1.95, 1.53, 7.8, 17.6]
    # → column 1 goes (absolute damping, + 0.2: [1.2, 1.458, 4.8, 10.8] → column 0)
    pruned = _sparsegpt([[1.0, 0.3, 2.0, 3.0]], [1.0, 16.0, 1.0, 1.0], 0.2, damp=0.2)
    torch.testing.assert_close(pruned, torch.tensor([[1.0, 0.0, 2.0, 3.0]], dtype=F64))


def test_sparsegpt_released_mask_is_one_threshold_per_block_and_row_is_the_variant():
    # H = I: saliency w² = [[1, 4], [9, 16]]; threshold = sorted[int(4 · 0.5)] = 9; all ≤ 9 go
    block = _sparsegpt([[1.0, 2.0], [3.0, 4.0]], [1.0, 1.0], 0.5)
    torch.testing.assert_close(block, torch.tensor([[0.0, 0.0], [0.0, 4.0]], dtype=F64))
    row = _sparsegpt([[1.0, 2.0], [3.0, 4.0]], [1.0, 1.0], 0.5, mask="row")  # round(0.5 · 2) = 1 per row
    torch.testing.assert_close(row, torch.tensor([[0.0, 2.0], [0.0, 4.0]], dtype=F64))


def test_sparsegpt_lazy_block_updates_equal_updating_every_later_column_at_once():
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(3, 200, generator=generator, dtype=F64)
    inputs = torch.randn(200, 400, generator=generator, dtype=F64)
    hessian = 2 * inputs @ inputs.T / 400
    pruned = SPARSE_PRUNERS.get("sparsegpt")(SparseRequest(weight, hessian, 0.5, damp=0.0))
    # the released algorithm written column by column: U = chol(H⁻¹) upper, the block mask chosen on the
    # weights as updated so far, err_j = (w_j − q_j)/U_jj subtracted as err_j · U_{j, j:} from every later column
    upper = torch.linalg.cholesky(torch.linalg.inv(hessian), upper=True)
    expected = weight.clone()
    for start in (0, 128):
        block = slice(start, min(start + 128, 200))
        saliency = expected[:, block].pow(2) / torch.diagonal(upper)[block].pow(2)
        mask = saliency <= saliency.flatten().sort().values[int(saliency.numel() * 0.5)]
        for j in range(block.start, block.stop):
            quantised = expected[:, j].masked_fill(mask[:, j - start], 0.0)
            error = (expected[:, j] - quantised) / upper[j, j]
            expected[:, j:] -= error[:, None] * upper[j, j:][None, :]
            expected[:, j] = quantised
    torch.testing.assert_close(pruned, expected, atol=1e-9, rtol=0)


# OWL and DSA --------------------------------------------------------------------------------


def _outlier_context(**overrides) -> AllocationContext:
    """Layer 0: a = nine 1s and a 10, b = ten 100s; layer 1: c = thirty-nine 1s and a 30 (input norms 1)."""
    a = torch.tensor([[1.0] * 9 + [10.0]])
    b = torch.full((1, 10), 100.0)
    c = torch.tensor([[1.0] * 39 + [30.0]])
    weights = [{"a": a, "b": b}, {"c": c}]
    norms = [{"a": torch.ones(10), "b": torch.ones(10)}, {"c": torch.ones(40)}]
    return AllocationContext(weights, norms, SparsifyConfig(sparsity=0.5, allocation="owl", **overrides))


def test_owl_pooled_threshold_and_its_direction():
    context = _outlier_context()
    # pooled: layer 0's mean (9 + 10 + 1000)/20 = 50.95, 5× = 254.75 → D = 0; layer 1: 5 × 1.725 = 8.6 → D = 1/40
    assert outlier_ratio(context.element_scores(0), 5.0) == 0.0
    assert outlier_ratio(context.element_scores(1), 5.0) == pytest.approx(0.025)
    # OWL's code: density = 2λ·(D − min)/(max − min) − mean + (1 − S) = [0.42, 0.58]; sparsity = 1 − density
    assert owl(context) == pytest.approx([0.58, 0.42])


def test_owl_threshold_is_m_times_the_mean():
    scores = [torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])]  # mean 22: 5× = 110 (the median's 5× = 15 would count 100)
    assert outlier_ratio(scores, 5.0) == 0.0
    assert outlier_ratio(scores, 4.0) == pytest.approx(0.2)  # 4 × 22 = 88 < 100


def test_owl_per_matrix_threshold_reverses_this_case():
    context = _outlier_context(owl_threshold="per-matrix")
    # a: 10 > 5 × 1.9; b: none → D = 1/20 = 0.05 > 0.025, so layer 0 now has more outliers
    assert outlier_ratio(context.element_scores(0), 5.0, "per-matrix") == pytest.approx(0.05)
    assert owl(context) == pytest.approx([0.42, 0.58])


def test_dsa_layer_score_pools_the_layers_elements_by_default():
    assert layer_scores(AllocationFunction(), _outlier_context()) == pytest.approx([0.0, 0.025])
    per_matrix = _outlier_context(dsa_scores="per-matrix")
    assert layer_scores(AllocationFunction(), per_matrix) == pytest.approx([0.05, 0.025])
    # mean reduction: pooled mean of layer 0 = 50.95; per matrix (1.9 + 100)/2 = 50.95 as well;
    # std tells them apart: pooled std of [1]*9+[10]+[100]*10 vs mean of the two stds
    # the outliers reduction is OWL's at M = 5: 8 is above 4 × 1.7 but not above 5 × 1.7
    eight = AllocationContext([{"a": torch.tensor([[1.0] * 9 + [8.0]])}], [{"a": torch.ones(10)}], SparsifyConfig())
    assert layer_scores(AllocationFunction(), eight) == [0.0]
    std = AllocationFunction(reduce="std")
    pooled = torch.tensor([1.0] * 9 + [10.0] + [100.0] * 10, dtype=F64).std()
    own = (torch.tensor([1.0] * 9 + [10.0], dtype=F64).std() + 0) / 2
    assert layer_scores(std, _outlier_context())[0] == pytest.approx(float(pooled))
    assert layer_scores(std, per_matrix)[0] == pytest.approx(float(own))


# AlphaPruning -------------------------------------------------------------------------------


def _diagonal(eigenvalues: list[float]) -> torch.Tensor:
    return torch.diag(torch.tensor(eigenvalues, dtype=F64).sqrt())  # WᵀW has exactly these eigenvalues


def test_alpha_peak_and_median_hill_estimates_by_hand():
    doubling = _diagonal([1, 2, 4, 8, 16, 32])
    # log10 histogram: one eigenvalue per bin → first bin is the peak, p = 1; window [log10 0.95, 1.5]
    # holds only λ = 1 (i = 0, n = 6): α = 1 + 6 / Σ ln(λ_k/1) = 1 + 6 / (15 ln 2)
    assert hill_alpha(doubling) == pytest.approx(1 + 6 / (15 * math.log(2)), rel=1e-6)
    # median: k = 3, descending x_min = 4: α = 1 + 3 / (ln 8 + ln 4 + ln 2)
    assert hill_alpha(doubling, "median") == pytest.approx(1 + 3 / (6 * math.log(2)), rel=1e-6)


def test_alpha_peak_takes_the_smallest_ks_distance_in_the_window():
    values = [1.0, 1.2, 5.0, 25.0]  # p = 1: the window holds λ = 1 and λ = 1.2

    def fit(i: int) -> tuple[float, float]:
        n = len(values) - i
        alpha_i = 1 + n / sum(math.log(v / values[i]) for v in values[i:])
        gaps = [abs(1 - (v / values[i]) ** (1 - alpha_i) - k / n) for k, v in enumerate(values[i:])]
        return alpha_i, max(gaps)

    (alpha0, distance0), (alpha1, distance1) = fit(0), fit(1)
    assert distance0 != distance1 and alpha0 != pytest.approx(alpha1)
    expected = alpha0 if distance0 <= distance1 else alpha1
    assert hill_alpha(_diagonal(values)) == pytest.approx(expected, rel=1e-6)


def test_alpha_multiplicative_map_by_hand():
    # n = [0, 0, 1], ε = 0.3 → r = [0.7, 0.7, 1.3]; equal sizes: S · r / mean r = 0.5 · r / 0.9
    assert multiplicative([2.0, 2.0, 4.0], [1, 1, 1], 0.5, 0.3) == pytest.approx([0.35 / 0.9, 0.35 / 0.9, 0.65 / 0.9])
    # sizes [1, 1, 2]: scale = 0.5 · 4 / (0.7 + 0.7 + 2.6) = 0.5
    assert multiplicative([2.0, 2.0, 4.0], [1, 1, 2], 0.5, 0.3) == pytest.approx([0.35, 0.35, 0.65])


def test_alpha_allocation_prunes_heavier_tails_less_in_both_maps():
    heavy = _diagonal([1, 3, 9, 27, 81, 243])  # α = 1 + 6/(15 ln 3) = 1.36 < 1 + 6/(15 ln 2) = 1.58
    light = _diagonal([1, 2, 4, 8, 16, 32])
    weights = [{"w": light}, {"w": heavy}]

    def allocate(**overrides) -> list[float]:
        config = SparsifyConfig(sparsity=0.5, allocation="alpha", **overrides)
        return alpha(AllocationContext(weights, [{}, {}], config))

    assert allocate() == pytest.approx([0.65, 0.35])  # r = [1.3, 0.7], mean 1: 0.5 · r
    assert allocate(alpha_map="additive") == pytest.approx([0.8, 0.2])  # 0.5 ± 0.3
    assert allocate(alpha_map="additive", alpha_epsilon=0.1, alpha_xmin="median") == pytest.approx([0.6, 0.4])


def test_alpha_multiplicative_map_weighs_layers_by_their_weight_count():
    heavy = _diagonal([1, 3, 9, 27, 81, 243])
    weights = [{"w": _diagonal([1, 2, 4, 8, 16, 32])}, {"w": heavy, "v": heavy}]  # 36 and 72 weights
    config = SparsifyConfig(sparsity=0.5, allocation="alpha")
    # r = [1.3, 0.7]; scale = 0.5 · 108 / (36 · 1.3 + 72 · 0.7) = 54 / 97.2
    scale = 54 / 97.2
    assert alpha(AllocationContext(weights, [{}, {}], config)) == pytest.approx([1.3 * scale, 0.7 * scale])


def test_alpha_peak_window_keeps_the_codes_log10_lower_end():
    values = [0.5, 3.0, 10.0, 10.1, 10.2, 100.0, 300.0]
    # 10 and 10.1 share the fullest of 100 log10 bins: p = 10^(log10 0.5 + 46 · Δ) ≈ 9.48, Δ = log10(600)/100;
    # the window [log10(0.95 p) ≈ 0.95, 1.5 p ≈ 14.2] holds 3, 10, 10.1 and 10.2 (a window [0.95 p, 1.5 p]
    # would drop 3, whose KS distance is the smallest)
    width = math.log10(600) / 100
    peak = 10 ** (math.log10(0.5) + 46 * width)
    assert math.log10(0.95 * peak) < 3.0 < 0.95 * peak and 10.2 < 1.5 * peak < 100
    window = _peak_window(torch.tensor(values, dtype=F64))
    assert window == pytest.approx((math.log10(0.95 * peak), 1.5 * peak))

    def fit(i: int) -> tuple[float, float]:
        n = len(values) - i
        alpha_i = 1 + n / sum(math.log(v / values[i]) for v in values[i:])
        return alpha_i, max(abs(1 - (v / values[i]) ** (1 - alpha_i) - k / n) for k, v in enumerate(values[i:]))

    fits = [fit(i) for i in (1, 2, 3, 4)]
    best = min(fits, key=lambda f: f[1])
    assert best == fits[0] and min(fits[1:], key=lambda f: f[1])[0] != pytest.approx(best[0])
    assert hill_alpha(_diagonal(values)) == pytest.approx(best[0], rel=1e-6)


# Settings and flags -------------------------------------------------------------------------


def test_defaults_are_the_released_code_and_the_flags_name_the_variants():
    sparse, width = SparsifyConfig(), WidthConfig()
    assert (sparse.owl_threshold, sparse.alpha_xmin, sparse.alpha_map, sparse.alpha_epsilon) == (
        "pooled",
        "peak",
        "multiplicative",
        0.3,
    )
    assert (sparse.dsa_scores, sparse.sparsegpt_mask, width.head_score, width.channel_batches) == (
        "pooled",
        "block",
        "released",
        "released",
    )
    parser = build_parser()
    sparsify = "sparsify --sparsity 0.5 --output o --owl-threshold per-matrix --alpha-xmin median --alpha-map"
    args = parser.parse_args(f"{sparsify} additive --dsa-scores per-matrix --sparsegpt-mask row".split())
    assert (args.owl_threshold, args.alpha_xmin, args.alpha_map, args.dsa_scores, args.sparsegpt_mask) == (
        "per-matrix",
        "median",
        "additive",
        "per-matrix",
        "row",
    )
    width_flags = "width --ratio 0.2 --output o --head-score exact --channel-batches"
    args = parser.parse_args(f"{width_flags} halving".split())
    assert (args.head_score, args.channel_batches) == ("exact", "halving")
    with pytest.raises(SystemExit) as raised:
        parser.parse_args(["width", "--ratio", "0.2", "--output", "o", "--head-score", "exactly"])
    assert raised.value.code == 2


def test_a_model_with_eight_kv_groups_loses_two_per_layer_one_at_a_time(monkeypatch):
    model = tiny_model("llama", num_attention_heads=8, num_key_value_heads=8)
    batches = []
    original = slimgpt_module.obs_prune_groups

    def spy(weight, hessian, groups, sizes, damp, score):
        batches.append((groups.shape[1], list(sizes), damp, score))
        return original(weight, hessian, groups, sizes, damp, score)

    monkeypatch.setattr(slimgpt_module, "obs_prune_groups", spy)
    config = WidthConfig(ratio=0.3, damp=0.05)
    result = width_prune(model, tiny_tokenizer(), config, CalibrationConfig(samples=4, seq_len=32))
    assert [w.num_key_value_heads for w in result.widths] == [6] * 4  # round(0.3 · 8) = 2 groups
    heads = [b for b in batches if b[0] > 1]
    assert heads == [(4, [1, 1], 0.05, "released")] * 4  # head_dim 4 columns per group


@pytest.mark.parametrize("mask", ["block", "row"])
def test_sparsify_passes_the_sparsegpt_mask_option(mask):
    model = tiny_model("llama")
    config = SparsifyConfig(pruner="sparsegpt", sparsity=0.5, sparsegpt_mask=mask)
    sparsify(model, tiny_tokenizer(), config, CalibrationConfig(samples=4, seq_len=32))
    counts = {
        int(count)
        for layer in decoder_layers(model)
        for linear in linear_targets(layer).values()
        for count in (linear.weight == 0).sum(dim=1) - round(0.5 * linear.in_features)
    }
    assert (counts == {0}) == (mask == "row")  # row: every row round(S · in) (one block); block: rows differ
