"""Healing losses (``LOSSES``): next-token cross-entropy, distillation from the dense model, and their mix.

All losses are means over the *trained positions*: position ``t`` predicts token ``t+1`` and
counts when ``labels[t+1] ≠ −100`` (response tokens of instruction data, every real token of
plain text). Distillation follows Hinton et al. (2015) and Minitron (Muralidharan et al.,
2024), which distil pruned Llama/Nemotron models from their dense parents on logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.healing.data import IGNORE
from layerprune.registry import Registry


@strict_config
class LossConfig:
    """``temperature`` T of the distillation softmax; ``alpha`` weights ce in ``ce+kd``."""

    name: str = "ce"
    temperature: Annotated[float, Field(gt=0)] = 1.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5

    @property
    def needs_teacher(self) -> bool:
        return self.name != "ce"


LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, LossConfig], torch.Tensor]
LOSSES: Registry[LossFunction] = Registry("healing loss")


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the predicting positions ``[N, V]`` and their targets ``[N]`` (trained positions only)."""
    targets = labels[:, 1:]
    keep = targets != IGNORE
    return logits[:, :-1][keep], targets[keep]


@LOSSES.register("ce")
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None, config: LossConfig):
    """ce = −mean_t log p_S(x_{t+1} | x_≤t) over trained positions (the paper's healing loss)."""
    predicting, targets = shifted(logits, labels)
    return F.cross_entropy(predicting.float(), targets)


@LOSSES.register("kd")
def distillation(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None, config: LossConfig):
    """kd = T² · mean_t KL(p_T ‖ p_S) with p = softmax(z / T), over trained positions.

    KL(p_T ‖ p_S) = Σ_v p_T(v) (log p_T(v) − log p_S(v)) is the forward KL of Hinton et al.;
    the T² factor keeps gradient magnitudes comparable across temperatures.
    """
    if teacher is None:
        raise UserError("the kd loss needs a teacher model")
    student, _ = shifted(logits, labels)
    reference, _ = shifted(teacher, labels)
    t = config.temperature
    log_student = F.log_softmax(student.float() / t, dim=-1)
    log_teacher = F.log_softmax(reference.float() / t, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)
    return kl.mean() * t * t


@LOSSES.register("ce+kd")
def mixed(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None, config: LossConfig):
    """ce+kd = α · ce + (1 − α) · kd."""
    ce = cross_entropy(logits, labels, teacher, config)
    return config.alpha * ce + (1 - config.alpha) * distillation(logits, labels, teacher, config)
