"""Data-free weight-magnitude importance (Lu et al. 2024, "Reassessing Layer Pruning in LLMs")."""

from __future__ import annotations

from transformers import PreTrainedModel

from layerprune.metrics.base import LayerScores, ScoringContext, data_free, register_metric
from layerprune.models import decoder_layers


def magnitude_scores(model: PreTrainedModel, power: int) -> list[float]:
    """score_i = Σ over every parameter tensor W of layer i (weights, biases, norms) of Σ |W|^p, in fp64."""
    return [
        sum(float(parameter.detach().double().abs().pow(power).sum()) for parameter in layer.parameters())
        for layer in decoder_layers(model)
    ]


@register_metric("magnitude-l1")
@data_free
def magnitude_l1(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """score_i = Σ_{W ∈ layer i} Σ |W|: the layer's entry-wise L1 norm. Layers with small weights go first."""
    return LayerScores("magnitude-l1", magnitude_scores(model, 1))


@register_metric("magnitude-l2")
@data_free
def magnitude_l2(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """score_i = Σ_{W ∈ layer i} Σ W²: the *squared* L2 norm, as in Lu et al. 2024 (no square root is taken)."""
    return LayerScores("magnitude-l2", magnitude_scores(model, 2))
