"""Healing losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from layerprune.errors import UserError
from layerprune.healing.data import IGNORE
from layerprune.healing.losses import LOSSES, LossConfig, LossInputs

# one sequence of 3 positions over a vocabulary of 3; position 0 predicts token 1 (ignored), 1 → 2, 2 → nothing
STUDENT = torch.tensor([[[1.0, 2.0, 0.0], [0.5, -1.0, 2.0], [9.0, 9.0, 9.0]]])
TEACHER = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 1.0], [-9.0, 0.0, 9.0]]])
LABELS = torch.tensor([[IGNORE, IGNORE, 0]])  # only position 1 is trained: it predicts token 0


def batch(student: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None) -> LossInputs:
    """Loss inputs from student and teacher logits."""
    outputs = None if teacher is None else CausalLMOutputWithPast(logits=teacher)
    return LossInputs(CausalLMOutputWithPast(logits=student), labels, outputs)


def softmax(values: list[float], t: float = 1.0) -> list[float]:
    exps = [math.exp(v / t) for v in values]
    return [e / sum(exps) for e in exps]


def test_ce_is_the_negative_log_probability_of_trained_targets() -> None:
    loss = LOSSES.get("ce")(batch(STUDENT, LABELS), LossConfig())
    assert loss.item() == pytest.approx(-math.log(softmax([0.5, -1.0, 2.0])[0]), rel=1e-6)


@pytest.mark.parametrize("t", [1.0, 2.0])
def test_kd_is_t_squared_forward_kl(t: float) -> None:
    p, q = softmax([2.0, 0.0, 1.0], t), softmax([0.5, -1.0, 2.0], t)
    expected = t * t * sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    loss = LOSSES.get("kd")(batch(STUDENT, LABELS, TEACHER), LossConfig(name="kd", temperature=t))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_kd_averages_over_trained_positions_and_vanishes_for_the_teacher_itself() -> None:
    labels = torch.tensor([[IGNORE, 1, 0]])
    both = LOSSES.get("kd")(batch(STUDENT, labels, TEACHER), LossConfig(name="kd"))
    first = LOSSES.get("kd")(batch(STUDENT[:, :2], labels[:, :2], TEACHER[:, :2]), LossConfig(name="kd"))
    second = LOSSES.get("kd")(batch(STUDENT, LABELS, TEACHER), LossConfig(name="kd"))
    assert both.item() == pytest.approx((first.item() + second.item()) / 2, rel=1e-6)
    assert LOSSES.get("kd")(batch(TEACHER, labels, TEACHER), LossConfig(name="kd")).item() == pytest.approx(0, abs=1e-7)


def test_mixed_weights_ce_and_kd() -> None:
    config = LossConfig(name="ce+kd", alpha=0.3, temperature=2.0)
    ce = LOSSES.get("ce")(batch(STUDENT, LABELS, TEACHER), config).item()
    kd = LOSSES.get("kd")(batch(STUDENT, LABELS, TEACHER), config).item()
    assert LOSSES.get("ce+kd")(batch(STUDENT, LABELS, TEACHER), config).item() == pytest.approx(
        0.3 * ce + 0.7 * kd, rel=1e-6
    )
    assert ce != pytest.approx(kd)


def test_bad_settings_and_missing_teacher() -> None:
    with pytest.raises(UserError, match="teacher"):
        LOSSES.get("kd")(batch(STUDENT, LABELS), LossConfig(name="kd"))
    with pytest.raises(UserError):
        LossConfig(alpha=1.5)
    with pytest.raises(UserError):
        LossConfig(temperature=0)
    assert not LossConfig().needs_teacher and LossConfig(name="ce+kd").needs_teacher


def test_mse_is_the_mean_squared_hidden_state_difference_over_trained_positions() -> None:
    # two positions of 2 features; position 1 is padding (label −100) and must not count
    student = torch.tensor([[[1.0, 2.0], [100.0, 100.0]]])
    teacher = torch.tensor([[[0.0, 4.0], [0.0, 0.0]]])
    labels = torch.tensor([[5, IGNORE]])
    inputs = LossInputs(
        CausalLMOutputWithPast(hidden_states=(teacher, student)),
        labels,
        CausalLMOutputWithPast(hidden_states=(teacher,)),
    )
    assert LOSSES.get("mse")(inputs, LossConfig(name="mse")).item() == pytest.approx(((1 - 0) ** 2 + (2 - 4) ** 2) / 2)
    assert LossConfig(name="mse").needs_hidden_states and not LossConfig(name="kd").needs_hidden_states
    with pytest.raises(UserError, match="mse loss needs a teacher"):
        LOSSES.get("mse")(LossInputs(inputs.student, labels), LossConfig(name="mse"))
