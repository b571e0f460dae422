"""Scoring a candidate stack by the similarity of its final hidden states to the input model's.

:class:`CachedEvaluator` runs the calibration batches through the model once and keeps
every layer's input. A candidate only changes layers at or above its lowest merged layer
``s``, so it is scored by resuming the *same* model object from the cached input of layer
``s`` with the merged layers substituted and the merged-away layers bypassed
(:func:`layerprune.execution.resumed_from`): no deep copy, and the layers below ``s`` are
not recomputed. :func:`deep_copy_final_hidden` is the naive way (copy the model, apply the
stack with the surgery, run everything); the tests keep it as the reference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from transformers import PreTrainedModel

from layerprune.errors import UserError
from layerprune.execution import capture_layer_inputs, resumed_from
from layerprune.merging.similarity import SIMILARITIES
from layerprune.merging.stack import LayerStack, apply_stack
from layerprune.models import decoder_layers, get_architecture, get_submodule

Batch = tuple[torch.Tensor, torch.Tensor]
StackScorer = Callable[[LayerStack], float]


def as_batches(calibration: object, batch_size: int) -> list[Batch]:
    """``(input_ids, attention_mask)`` batches of a CalibrationSet (``batches(batch_size)``) or of a sequence."""
    if hasattr(calibration, "batches"):
        return list(calibration.batches(batch_size))
    if isinstance(calibration, Sequence):
        return list(calibration)
    raise UserError("calibration must be a CalibrationSet or a sequence of (input_ids, attention_mask) batches")


def decoder_stack(model: PreTrainedModel) -> torch.nn.Module:
    """The module that owns the decoder layers and the final norm (``model.model`` for Llama)."""
    return get_submodule(model, get_architecture(model).layers.rpartition(".")[0])


@torch.no_grad()
def final_hidden(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden state after the final norm, without the LM head (``hidden_states[-1]`` of HF outputs)."""
    output = decoder_stack(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return output.last_hidden_state


class CachedEvaluator:
    """Similarity of a candidate to the input model, resumed from cached layer inputs.

    Similarities are memoised by the stack's merge history, so repeated searches (target
    mode's bisection over thresholds) reuse every evaluation.
    """

    def __init__(self, model: PreTrainedModel, batches: Sequence[Batch], similarity: str = "cosine") -> None:
        self.model = model
        self.batches = list(batches)
        self.similarity = SIMILARITIES.get(similarity)
        self.inputs = [capture_layer_inputs(model, ids, mask) for ids, mask in self.batches]
        self.reference = [final_hidden(model, ids, mask) for ids, mask in self.batches]
        self.memo: dict[tuple, float] = {}
        self.evaluations = 0

    def __call__(self, stack: LayerStack) -> float:
        key = stack.key()
        if key not in self.memo:
            self.memo[key] = self._score(stack)
        return self.memo[key]

    def _score(self, stack: LayerStack) -> float:
        self.evaluations += 1
        return self.similarity(self.reference, self.final_hidden(stack), [mask for _, mask in self.batches])

    def final_hidden(self, stack: LayerStack) -> list[torch.Tensor]:
        """The candidate's final hidden states per batch, resumed from its lowest changed layer."""
        start, substitutes = stack.first_changed(), stack.substitutes()
        outputs = []
        for (ids, mask), states in zip(self.batches, self.inputs, strict=True):
            with resumed_from(self.model, start, states[start], extra=substitutes):
                outputs.append(final_hidden(self.model, ids, mask))
        return outputs


def deep_copy_final_hidden(model: PreTrainedModel, stack: LayerStack, batches: Sequence[Batch]) -> list[torch.Tensor]:
    """The naive reference: deep-copy the model, apply ``stack`` by surgery, run every batch from the start."""
    candidate = copy.deepcopy(model)
    apply_stack(candidate, _rebased(stack, candidate))
    return [final_hidden(candidate, ids, mask) for ids, mask in batches]


def _rebased(stack: LayerStack, model: PreTrainedModel) -> LayerStack:
    """``stack`` with the copy's own layers as unmerged modules and copies of the merged ones."""
    groups = tuple(replace(g, module=copy.deepcopy(g.module)) for g in stack.groups)
    return replace(stack, groups=groups, layers=tuple(decoder_layers(model)))
