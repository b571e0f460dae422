"""Constructed cases that fail under a wrong formula (each checked by mutating the code).

Streamline's block bounds, the flattened per-sample cosine of SLM/LaCo, BI against the
flattened BI, the pre-final-norm states of ``bi``/``angular`` (norm weights that are not 1),
``random`` beyond reproducibility, and the released-code options (SLEB ends, magnitude
without biases, LaCo's notebook rule, Streamline's normed top state, one ratio rounding).
"""

from __future__ import annotations

import collections

import pytest
import torch

from layerprune.merging import LacoConfig, LayerStack, MergeConfig, laco_search
from layerprune.merging.similarity import cosine
from layerprune.merging.streamline import choose_block
from layerprune.metrics import METRICS, ScoringContext
from layerprune.metrics.similarity import SimilarityStatistics
from layerprune.models import decoder_layers, final_norm
from metric_fixtures import greedy_calibration, random_calibration
from test_merging_models import deep_tiny
from tiny_models import tiny_model, token_batch


def _make_identity(model, indices) -> None:
    with torch.no_grad():
        for index in indices:
            layer = decoder_layers(model)[index]
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()


def _batches(count: int = 2):
    mask = torch.ones(4, 16, dtype=torch.long)
    return [(token_batch(4, 16, seed=i), mask) for i in range(count)]


def test_streamline_compares_the_input_of_layer_i_with_the_output_of_layer_i_plus_n() -> None:
    # Layers 0, 2 and 3 are exact identities. The block [2–3] (n = 1) leaves the state unchanged:
    # cos(x_2, x_4) = 1. Comparing x_i with x_{i+n} instead would tie [0–1] at 1 and pick it.
    model = deep_tiny("llama", 6)
    _make_identity(model, [0, 2, 3])
    first, similarity = choose_block(model, _batches(), 1, "cosine")
    assert first == 2
    assert similarity == pytest.approx(1.0, abs=1e-12)


def test_merge_cosine_is_the_flattened_per_sample_cosine() -> None:
    # One sample, two tokens: per-token cosines 0 and 1 (mean 0.5); flattened: 100 / 101.
    reference = [torch.tensor([[[1.0, 0.0], [0.0, 10.0]], [[3.0, 4.0], [0.0, 1.0]]])]
    candidate = [torch.tensor([[[0.0, 1.0], [0.0, 10.0]], [[4.0, 3.0], [1.0, 0.0]]])]
    masks = [torch.ones(2, 2)]
    second = (12 + 12 + 0) / (26**0.5 * 26**0.5)  # sample 2 flattened: ⟨(3,4,0,1),(4,3,1,0)⟩ / (√26 √26)
    assert cosine(reference, candidate, masks) == pytest.approx((100 / 101 + second) / 2, abs=1e-12)


def test_bi_averages_token_cosines_and_bi_global_flattens() -> None:
    states = [torch.tensor([[[1.0, 0.0], [0.0, 10.0]]]), torch.tensor([[[0.0, 1.0], [0.0, 10.0]]])]
    statistics = SimilarityStatistics.empty(2)
    statistics.add(states, torch.ones(1, 2), "all")
    assert 1 - statistics.cosine_matrix()[0, 1].item() == pytest.approx(0.5, abs=1e-12)  # bi
    assert 1 - statistics.global_cosine_matrix()[0, 1].item() == pytest.approx(1 / 101, abs=1e-12)  # bi-global


def _uneven_norm_model():
    """Tiny Llama whose final RMSNorm weights are far from 1 (so normed and raw states point differently)."""
    model = tiny_model("llama", seed=4)
    with torch.no_grad():
        final_norm(model).weight.copy_(torch.linspace(0.05, 4.0, model.config.hidden_size))
    return model


@torch.no_grad()
def _raw_and_normed_last(model, calibration):
    """States from transformers alone: the input of every layer, and the last state before and after the norm."""
    captured = []
    handle = final_norm(model).register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    out = model(input_ids=calibration.input_ids, output_hidden_states=True)
    handle.remove()
    return out.hidden_states, captured[0], out.hidden_states[-1]


@pytest.mark.parametrize("metric", ["bi", "angular"])
def test_bi_and_angular_use_the_last_state_before_the_final_norm(metric) -> None:
    model, calibration = _uneven_norm_model(), random_calibration()
    hidden, raw, normed = _raw_and_normed_last(model, calibration)
    before, last = hidden[-2], len(hidden) - 2  # input of the last layer; its index

    def expected(top):
        cos = torch.nn.functional.cosine_similarity(before.double(), top.double(), dim=-1)
        if metric == "bi":
            return float(1 - cos.mean())
        return float(torch.arccos(cos[:, -1].clamp(-1, 1)).mean() / torch.pi)

    scores = METRICS.get(metric)(model, ScoringContext(calibration=calibration, progress=False)).scores
    assert scores[last] == pytest.approx(expected(raw), abs=1e-5)
    assert abs(expected(raw) - expected(normed)) > 1e-2, "the fixture tells the two apart"


def test_random_is_a_uniform_permutation_drawn_from_torch_generator() -> None:
    model = tiny_model("llama")
    scores = [METRICS.get("random")(model, ScoringContext(seed=seed)).scores for seed in range(400)]
    assert all(sorted(s) == [0.0, 1.0, 2.0, 3.0] for s in scores)
    assert scores[7] == [float(v) for v in torch.randperm(4, generator=torch.Generator().manual_seed(7))]
    first = collections.Counter(min(range(4), key=s.__getitem__) for s in scores)
    assert all(70 <= first[layer] <= 130 for layer in range(4)), first  # 100 expected each (≈ 5 σ band)
    assert len({tuple(s) for s in scores}) == 24, "every order of 4 layers occurs"


def test_sleb_paper_preset_never_removes_the_first_or_last_layer() -> None:
    model = tiny_model("llama", seed=3)
    _make_identity(model, [0, 3])  # the obvious choices, if they were candidates
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    calibration = greedy_calibration(model)
    context = ScoringContext(calibration=calibration, sleb_steps=2, preset="paper", progress=False)
    assert METRICS.get("sleb")(model, context).removal_order(2) == [1, 2]
    default = METRICS.get("sleb")(model, ScoringContext(calibration=calibration, sleb_steps=2, progress=False))
    assert default.removal_order(2) == [0, 3]


def test_magnitude_weights_only_leaves_biases_out() -> None:
    model = tiny_model("qwen2")  # q/k/v projections carry biases
    with torch.no_grad():
        for layer in decoder_layers(model):
            layer.self_attn.q_proj.bias.fill_(1.0)
    bias = model.config.num_attention_heads * (model.config.hidden_size // model.config.num_attention_heads)
    with_bias = METRICS.get("magnitude-l1")(model, ScoringContext()).scores
    weights = METRICS.get("magnitude-l1")(model, ScoringContext(magnitude_weights_only=True)).scores
    other_biases = [
        sum(float(p.abs().sum()) for n, p in layer.named_parameters() if n.endswith("bias") and "q_proj" not in n)
        for layer in decoder_layers(model)
    ]
    for full, only, rest in zip(with_bias, weights, other_biases, strict=True):
        assert full - only == pytest.approx(bias + rest, rel=1e-9)
    assert ScoringContext(preset="paper").magnitude_weights_only


class _Recorder:
    def __init__(self, passing: set[tuple[int, int]]) -> None:
        self.passing, self.asked = passing, []

    def __call__(self, stack: LayerStack) -> float:
        span = (stack.steps[-1].first, stack.steps[-1].last)
        self.asked.append(span)
        return 0.9 if span in self.passing else 0.1


def test_laco_notebook_rule_starts_one_group_lower() -> None:
    # 10 layers, C=3, I=2, L=1, H=9. Notebook: first group 6–8 (H−C … H−1); ours: 7–9.
    notebook = _Recorder({(6, 8), (3, 5)})
    laco_search(LayerStack.initial(10), notebook, 0.5, LacoConfig(merge_layers=3, interval=2, rule="notebook"))
    assert notebook.asked == [(6, 8), (4, 8), (3, 5), (1, 5)]
    ours = _Recorder(set())
    laco_search(LayerStack.initial(10), ours, 0.5, LacoConfig(merge_layers=3, interval=2))
    assert ours.asked[0] == (7, 9)


def test_streamline_final_norm_option_scores_the_top_block_after_the_norm() -> None:
    model = _uneven_norm_model()
    _make_identity(model, [2, 3])  # the top block [2–3] is an identity before the norm
    assert choose_block(model, _batches(), 1, "cosine") == (2, pytest.approx(1.0, abs=1e-12))
    first, similarity = choose_block(model, _batches(), 1, "cosine", normed_top=True)
    assert first != 2 or similarity < 0.99


def test_merge_ratio_rounds_halves_up_like_prune() -> None:
    assert MergeConfig(ratio=0.25).validate(18) == 5  # 4.5 → 5 (Python's round gives 4)
    assert MergeConfig(ratio=0.25).validate(30) == 8
