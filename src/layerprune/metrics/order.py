"""Data-free baselines from Lu et al. 2024: reverse-order and random selection."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from layerprune.metrics.base import LayerScores, ScoringContext, data_free, register_metric
from layerprune.models import num_layers


@register_metric("reverse-order")
@data_free
def reverse_order(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """Importance grows with depth reversed: score_i = L − i, so the last layers go first.

    Lu et al. (2024) find this simple rule the strongest selection after fine-tuning.
    """
    count = num_layers(model)
    return LayerScores("reverse-order", [float(count - i) for i in range(count)])


@register_metric("random")
@data_free
def random_order(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """Seeded uniform random importance: score_i is layer i's rank in a random permutation."""
    generator = torch.Generator().manual_seed(context.seed)
    permutation = torch.randperm(num_layers(model), generator=generator)
    return LayerScores("random", [float(v) for v in permutation])
