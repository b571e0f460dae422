"""Calibration NLL of the model with layers removed, from cached layer inputs (for ``ppl`` and ``sleb``).

The inputs of every layer are captured once per batch. Removing layer ``i`` then re-runs
only the layers after ``i``, resuming from the cached input of layer ``i`` (which is what
layer ``i + 1`` receives once ``i`` is gone). After a removal is committed, the caches of
the layers below it stay valid and only those above it are refreshed. The model is never
copied; :func:`~layerprune.execution.resumed_from` swaps modules for the duration of a call.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from layerprune.calibration import CalibrationSet
from layerprune.execution import Bypass, capture_layer_inputs, resumed_from
from layerprune.metrics.nll import predicted_positions, token_nll
from layerprune.models import num_layers


class RemovalSearch:
    """Mean next-token NLL on a calibration set for "the current removals plus one more layer"."""

    def __init__(
        self, model: PreTrainedModel, calibration: CalibrationSet, batch_size: int, progress: bool = True
    ) -> None:
        self.model = model
        self.progress = progress
        self.batches = [(ids.to(model.device), mask.to(model.device)) for ids, mask in calibration.batches(batch_size)]
        self.tokens = int(predicted_positions(calibration.attention_mask).sum())
        self.removed: set[int] = set()
        bar = tqdm(self.batches, desc="caching layer inputs", disable=not progress)
        self.states = [capture_layer_inputs(model, ids, mask) for ids, mask in bar]

    @property
    def remaining(self) -> list[int]:
        return [i for i in range(num_layers(self.model)) if i not in self.removed]

    @torch.no_grad()
    def nll_without(self, layer: int) -> float:
        """Mean NLL with ``layer`` removed on top of the committed removals; re-runs only layers > ``layer``."""
        total = 0.0
        for (input_ids, attention_mask), states in zip(self.batches, self.states, strict=True):
            with resumed_from(self.model, layer + 1, states[layer], extra=self._bypasses_above(layer)):
                total += float(token_nll(self.model, input_ids, attention_mask)[0])
        return total / self.tokens

    def nll_table(self, candidates: list[int], description: str) -> dict[int, float]:
        """``nll_without`` for every candidate, with a progress bar."""
        bar = tqdm(candidates, desc=description, disable=not self.progress)
        return {layer: self.nll_without(layer) for layer in bar}

    @torch.no_grad()
    def remove(self, layer: int) -> None:
        """Commit the removal of ``layer``: refresh the cached inputs of the layers above it."""
        self.removed.add(layer)
        for index, (input_ids, attention_mask) in enumerate(self.batches):
            states = self.states[index]
            with resumed_from(self.model, layer + 1, states[layer], extra=self._bypasses_above(layer)):
                fresh = capture_layer_inputs(self.model, input_ids, attention_mask)
            self.states[index] = states[: layer + 1] + fresh[layer + 1 :]

    def _bypasses_above(self, layer: int) -> dict[int, Bypass]:
        return {index: Bypass() for index in self.removed if index > layer}


def perplexity(mean_nll: float) -> float:
    return math.exp(mean_nll)
