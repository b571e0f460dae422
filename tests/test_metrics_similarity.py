"""One-pass similarity metrics: closed forms on hand-built states, identity layers, pads, dtypes, one pass."""

from __future__ import annotations

import math

import pytest
import torch

from layerprune.metrics import METRICS, ScoringContext, score
from layerprune.metrics.similarity import SimilarityStatistics, pairwise_angles
from layerprune.models import decoder_layers
from metric_fixtures import IDENTITY_LAYER, calibration_of, identity_layer_model, random_calibration
from tiny_models import tiny_model, token_batch

COS60, SIN60 = 0.5, math.sqrt(3) / 2


def hand_built_states(pad_value: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """3 states × 2 samples × 3 tokens × 2 dims; sample 1's last token is padding."""
    e1 = [1.0, 0.0]
    state0 = torch.tensor([[e1, e1, e1], [e1, e1, e1]])
    state1 = torch.tensor([[e1, e1, [0.0, 1.0]], [e1, [COS60, SIN60], [pad_value, 0.0]]])
    state2 = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [5.0, 0.0]], [e1, [-1.0, 0.0], [0.0, pad_value]]])
    return [state0, state1, state2], torch.tensor([[1, 1, 1], [1, 1, 0]])


@pytest.mark.parametrize("pad_value", [-1.0, 1e4])
def test_closed_forms_on_hand_built_vectors_ignore_pads(pad_value):
    states, mask = hand_built_states(pad_value)
    last, every = SimilarityStatistics.empty(3), SimilarityStatistics.empty(3)
    last.add(states, mask, "last")
    every.add(states, mask, "all")
    angles = last.angular_matrix()
    # last real tokens: sample 0 at 0°, 90°, 0°; sample 1 at 0°, 60°, 180° (from e1)
    assert angles[0, 1].item() == pytest.approx((1 / 2 + 1 / 3) / 2, abs=1e-6)
    assert angles[1, 2].item() == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-6)
    assert angles[0, 2].item() == pytest.approx((0 + 1) / 2, abs=1e-6)
    assert every.angular_matrix()[0, 1].item() == pytest.approx((1 / 2 + 1 / 3) / 5, abs=1e-6)
    cosine = last.cosine_matrix()
    assert 1 - cosine[0, 1].item() == pytest.approx(1 - 3.5 / 5, abs=1e-6)  # BI_0
    assert 1 - cosine[1, 2].item() == pytest.approx(1 - 1.5 / 5, abs=1e-6)  # BI_1
    dot_12 = 1 * 2 + 0 + 0 + 1 - COS60  # ⟨state1, state2⟩ summed over the 5 real tokens
    norm_1, norm_2 = math.sqrt(5), math.sqrt(4 + 9 + 25 + 1 + 1)
    assert last.global_cosine_matrix()[1, 2].item() == pytest.approx(dot_12 / (norm_1 * norm_2), abs=1e-9)


def test_angles_are_exact_for_equal_and_opposite_vectors():
    unit = torch.nn.functional.normalize(torch.randn(2, 5, 7), dim=-1)
    unit[1] = unit[0]
    angles = pairwise_angles(torch.cat([unit, -unit[:1]]))
    assert torch.equal(angles[0, 1], torch.zeros(5))
    assert torch.allclose(angles[0, 2], torch.ones(5), atol=1e-6)


def test_cka_is_one_under_scaling_and_rotation_and_symmetric():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 4, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=generator))
    y = torch.randn(2, 6, 4, generator=generator)
    statistics = SimilarityStatistics.empty(3)
    statistics.add([x, 3 * x @ rotation + 1.5, y], torch.ones(2, 6), "last")
    cka = statistics.cka_matrix()
    assert cka[0, 1].item() == pytest.approx(1, abs=1e-6)
    assert torch.allclose(cka, cka.T) and torch.allclose(cka.diagonal(), torch.ones(3, dtype=cka.dtype))
    assert 0 < cka[0, 2].item() < 0.99


def test_identity_layer_scores_zero_and_goes_first():
    model = identity_layer_model()
    scores = score(model, metrics=["bi", "bi-global", "angular", "cka"], calib=random_calibration(), progress=False)
    for name in ("bi", "bi-global", "angular", "cka"):
        values = scores.get(name).scores
        assert abs(values[IDENTITY_LAYER]) < 1e-6, name
        assert min(v for i, v in enumerate(values) if i != IDENTITY_LAYER) > 1e-4, name
        assert scores.removal_order(name, 1) == [IDENTITY_LAYER]
    assert scores.angular_table[1][IDENTITY_LAYER] == 0.0


def test_all_similarity_metrics_share_one_forward_pass_per_batch():
    model = tiny_model("qwen2")
    calls = []
    decoder_layers(model)[0].register_forward_pre_hook(lambda *args: calls.append(1))
    calibration = random_calibration(samples=5)
    scores = score(
        model, metrics=["bi", "bi-global", "angular", "cka"], calib=calibration, batch_size=2, progress=False
    )
    assert len(calls) == 3
    assert set(scores.similarity) == {"cosine", "cka"}
    assert torch.tensor(scores.similarity["cosine"]).shape == (5, 5)


def test_scores_do_not_depend_on_batch_size_or_padding():
    model = tiny_model("gemma2")
    ids = token_batch(4, 12, seed=2)
    mask = torch.ones_like(ids)
    names = ["bi", "bi-global", "angular", "cka"]
    whole = score(model, metrics=names, calib=calibration_of(ids), batch_size=4, progress=False)
    split = score(model, metrics=names, calib=calibration_of(ids), batch_size=1, progress=False)
    padded_ids = torch.cat([ids, torch.zeros(4, 3, dtype=ids.dtype)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(4, 3, dtype=mask.dtype)], dim=1)
    padded = score(model, metrics=names, calib=calibration_of(padded_ids, padded_mask), progress=False)
    for name in names:
        assert split.get(name).scores == pytest.approx(whole.get(name).scores, rel=1e-5, abs=1e-7), name
        assert padded.get(name).scores == pytest.approx(whole.get(name).scores, rel=1e-4, abs=1e-6), name


def test_bf16_model_gives_finite_scores():
    model = tiny_model("llama").to(torch.bfloat16)
    names = ["bi", "bi-global", "angular", "cka", "ppl", "taylor", "magnitude-l2"]
    scores = score(model, metrics=names, calib=random_calibration(), progress=False)
    for name in names:
        assert all(math.isfinite(v) for v in scores.get(name).scores), name
    assert torch.isfinite(torch.tensor(scores.similarity["cka"])).all()


def test_angular_all_tokens_option_and_missing_calibration():
    model = identity_layer_model()
    scores = score(model, metrics=["angular"], calib=random_calibration(), angular_tokens="all", progress=False)
    assert scores.get("angular").scores[IDENTITY_LAYER] == 0.0
    assert scores.settings["angular_tokens"] == "all"
    with pytest.raises(ValueError, match="needs calibration data"):
        METRICS.get("bi")(model, ScoringContext())
