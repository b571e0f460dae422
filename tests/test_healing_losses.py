"""Healing losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from layerprune.errors import UserError
from layerprune.healing.data import IGNORE
from layerprune.healing.losses import LOSSES, LossConfig, LossInputs
from layerprune.surgery import remove_layers
from tiny_models import tiny_model

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


def test_kd_hidden_aligns_each_kept_layer_with_the_dense_layer_it_stands_for() -> None:
    from layerprune.healing.losses import aligned_hidden_states

    # dense layers 0..4, layers 1 and 2 removed: kept 0, 3, 4. The input of kept layer 1 (source 3) is the dense
    # input of layer 3; the input of kept layer 2 (source 4) that of layer 4; the final outputs pair up.
    assert aligned_hidden_states([0, 3, 4], 5) == [(1, 3), (2, 4), (3, 5)]
    # states of two positions and two features: the student's first state equals the teacher's, the second is off
    zero, one = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)
    teacher = (zero, one * 7, one * 2, one * 3)  # 3 dense layers: inputs of 0, 1, 2 and the final output
    student = (zero, one * 2, one * 6)  # 2 kept layers, sources 0 and 2
    logits = torch.zeros(1, 2, 3)
    inputs = LossInputs(
        CausalLMOutputWithPast(logits=logits, hidden_states=student),
        torch.tensor([[5, 5]]),
        CausalLMOutputWithPast(logits=logits, hidden_states=teacher),
        layer_map=[0, 2],
    )
    # pairs (1, 2): 2 against 2, error 0; (2, 3): 6 against 3, ‖3‖² / ‖3‖² = 1 per feature → 1. Mean 0.5, kd 0
    for beta in (1.0, 0.3):
        loss = LOSSES.get("kd+hidden")(inputs, LossConfig(name="kd+hidden", hidden_weight=beta))
        assert loss.item() == pytest.approx(0.5 * beta)
    assert LossConfig(name="kd+hidden").reads_every_layer and not LossConfig(name="mse").reads_every_layer
    with pytest.raises(UserError, match="layer map"):
        LOSSES.get("kd+hidden")(LossInputs(inputs.student, inputs.labels, inputs.teacher), LossConfig(name="kd+hidden"))


def test_kd_hidden_is_zero_when_the_removed_layer_was_an_identity() -> None:
    """A pruned model whose removed layer did nothing matches the dense one at every aligned state, not at others."""
    dense = tiny_model("llama", num_hidden_layers=4)
    layer = dense.model.layers[1]
    torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
    torch.nn.init.zeros_(layer.mlp.down_proj.weight)  # layer 1 adds nothing to the residual stream
    pruned = remove_layers(tiny_model("llama", num_hidden_layers=4), [1])
    pruned.load_state_dict({k: v for k, v in dense.state_dict().items() if ".layers.1." not in k}, strict=False)
    for index, kept in enumerate(pruned.model.layers):
        kept.load_state_dict(dense.model.layers[[0, 2, 3][index]].state_dict())
    ids = torch.randint(0, dense.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        student = pruned(ids, output_hidden_states=True)
        teacher = dense(ids, output_hidden_states=True)
    labels = ids.clone()
    aligned = LossInputs(student, labels, teacher, layer_map=[0, 2, 3])
    assert LOSSES.get("kd+hidden")(aligned, LossConfig(name="kd+hidden")).item() == pytest.approx(0.0, abs=1e-10)
    shifted = LossInputs(student, labels, teacher, layer_map=[0, 1, 2])  # off by one: not the dense states
    assert LOSSES.get("kd+hidden")(shifted, LossConfig(name="kd+hidden")).item() > 1e-3
