"""Training losses (``LOSSES``): next-token cross-entropy, distillation on logits or hidden states, mixes.

Every loss takes one :class:`LossInputs` (the student's outputs: logits and hidden states;
the labels; the teacher's outputs) and a :class:`LossConfig`, so the healing Trainer and
LLM-Streamline's replacement-layer training (:mod:`layerprune.merging.streamline`) share them.
Logit losses are means over the *trained positions*: position ``t`` predicts token ``t+1`` and
counts when ``labels[t+1] ≠ −100`` (response tokens of instruction data, every real token of
plain text). Distillation follows Hinton et al. (2015) and Minitron (Muralidharan et al.,
2024), which distil pruned Llama/Nemotron models from their dense parents on logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.healing.data import IGNORE
from layerprune.models.head import head_nll, logits_nll
from layerprune.registry import Registry


@strict_config
class LossConfig:
    """``temperature`` T of the distillation softmax; ``alpha`` weights ce in ``ce+kd``; ``hidden_weight`` β
    weights the aligned hidden-state term of ``kd+hidden``."""

    name: str = "ce"
    temperature: Annotated[float, Field(gt=0)] = 1.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5
    hidden_weight: Annotated[float, Field(ge=0)] = 1.0

    @property
    def needs_teacher(self) -> bool:
        return self.name != "ce"

    @property
    def needs_hidden_states(self) -> bool:
        return self.name in ("mse", "kd+hidden")

    @property
    def reads_every_layer(self) -> bool:
        """Whether the loss reads every layer's hidden state (not only the last)."""
        return self.name == "kd+hidden"

    @property
    def uses_head_input(self) -> bool:
        """Whether the loss is computed from the LM head's input, chunked, instead of logits (ce alone)."""
        return self.name == "ce"


@dataclass
class LossInputs:
    """What a loss sees: the student's outputs (``logits``, ``hidden_states``), the labels, the teacher's outputs.

    A student run inside :func:`~layerprune.models.head.head_skipped` has no logits but its head's
    input, ``student["head_input"]``; ``model`` is then the student, whose head ce applies in chunks.
    ``layer_map[i]`` is the dense (teacher) index of the student's layer ``i`` (its provenance).
    """

    student: ModelOutput
    labels: torch.Tensor
    teacher: ModelOutput | None = None
    model: PreTrainedModel | None = None
    layer_map: list[int] | None = None

    def teacher_outputs(self, loss: str) -> ModelOutput:
        if self.teacher is None:
            raise UserError(f"the {loss} loss needs a teacher model")
        return self.teacher


LossFunction = Callable[[LossInputs, LossConfig], torch.Tensor]
LOSSES: Registry[LossFunction] = Registry("healing loss")


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the predicting positions ``[N, V]`` and their targets ``[N]`` (trained positions only)."""
    targets = labels[:, 1:]
    keep = targets != IGNORE
    return logits[:, :-1][keep], targets[keep]


@LOSSES.register("ce")
def cross_entropy(inputs: LossInputs, config: LossConfig) -> torch.Tensor:
    """ce = −mean_t log p_S(x_{t+1} | x_≤t) over trained positions (the paper's healing loss).

    From the head's input when the student carries it (:func:`~layerprune.models.head.head_nll`:
    only trained positions reach the head, a chunk at a time), else from its logits.
    """
    targets = inputs.labels[:, 1:]
    keep = targets != IGNORE
    hidden = inputs.student.get("head_input")
    if hidden is not None:
        return head_nll(inputs.model, hidden[:, :-1][keep], targets[keep]) / keep.sum()
    return logits_nll(inputs.student.logits[:, :-1][keep], targets[keep]) / keep.sum()


@LOSSES.register("kd")
def distillation(inputs: LossInputs, config: LossConfig) -> torch.Tensor:
    """kd = T² · mean_t KL(p_T ‖ p_S) with p = softmax(z / T), over trained positions.

    KL(p_T ‖ p_S) = Σ_v p_T(v) (log p_T(v) − log p_S(v)) is the forward KL of Hinton et al.;
    the T² factor keeps gradient magnitudes comparable across temperatures.
    """
    teacher = inputs.teacher_outputs("kd")
    student, _ = shifted(inputs.student.logits, inputs.labels)
    reference, _ = shifted(teacher.logits, inputs.labels)
    t = config.temperature
    log_student = F.log_softmax(student.float() / t, dim=-1)
    log_teacher = F.log_softmax(reference.float() / t, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)
    return kl.mean() * t * t


@LOSSES.register("ce+kd")
def mixed(inputs: LossInputs, config: LossConfig) -> torch.Tensor:
    """ce+kd = α · ce + (1 − α) · kd."""
    return config.alpha * cross_entropy(inputs, config) + (1 - config.alpha) * distillation(inputs, config)


@LOSSES.register("mse")
def hidden_mse(inputs: LossInputs, config: LossConfig) -> torch.Tensor:
    """mse = mean over positions t with ``labels[t] ≠ −100`` and features j of (h_S[t, j] − h_T[t, j])².

    h is the last entry of ``hidden_states``: for a whole model, the final hidden state
    (after the final norm); for LLM-Streamline, the replacement layer's output h_S = f(x_i)
    and the frozen block's output h_T = y_{i+n} (Chen et al., 2024, eq. 2).
    """
    keep = inputs.labels != IGNORE
    student = inputs.student.hidden_states[-1][keep]
    teacher = inputs.teacher_outputs("mse").hidden_states[-1][keep]
    return F.mse_loss(student.float(), teacher.float())


def aligned_hidden_states(layer_map: list[int], teacher_layers: int) -> list[tuple[int, int]]:
    """Pairs (student index, teacher index) into ``hidden_states`` that should agree after pruning.

    ``hidden_states[k]`` is the input of layer ``k`` (the output of layer ``k − 1``), and the last
    entry the final normed output. The student's layer ``j`` stands where the dense layer
    ``layer_map[j]`` stood, so its input should be the dense model's input to that layer:
    pairs ``(j, layer_map[j])`` for ``j = 1 … L' − 1``, plus the two final outputs ``(L', L)``.
    For a deletion, the student's layer ``j − 1`` thus answers for the dense layer just before
    ``layer_map[j]``, the last of the run it now replaces; a merged run counts as its first layer.
    """
    pairs = [(j, layer_map[j]) for j in range(1, len(layer_map))]
    return [*pairs, (len(layer_map), teacher_layers)]


@LOSSES.register("kd+hidden")
def distillation_with_hidden_states(inputs: LossInputs, config: LossConfig) -> torch.Tensor:
    """kd+hidden = kd + β · mean over aligned pairs (s, t) of ‖h_S[s] − h_T[t]‖² / ‖h_T[t]‖².

    Distillation on logits plus the student's hidden states against the dense model's, aligned
    through the layer map (:func:`aligned_hidden_states`), each as a normalised squared error
    over the trained positions (``labels ≠ −100``) so that layers of different scale weigh
    alike. Intermediate-state distillation after pruning as in Minitron (Muralidharan et al.,
    2024, §3.4, "intermediate states") and Sheared-LLaMA's layer alignment; β is ``hidden_weight``.
    """
    teacher = inputs.teacher_outputs("kd+hidden")
    if inputs.layer_map is None:
        raise UserError("the kd+hidden loss needs the student's layer map (its layerprune provenance)")
    keep = inputs.labels != IGNORE
    student_states, teacher_states = inputs.student.hidden_states, teacher.hidden_states
    errors = []
    for s, t in aligned_hidden_states(inputs.layer_map, len(teacher_states) - 1):
        target = teacher_states[t][keep].float()
        difference = student_states[s][keep].float() - target
        errors.append(difference.pow(2).sum() / target.pow(2).sum().clamp_min(1e-12))
    return distillation(inputs, config) + config.hidden_weight * torch.stack(errors).mean()
