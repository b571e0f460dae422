"""Data-free weight-magnitude importance (Lu et al. 2024, "Reassessing Layer Pruning in LLMs")."""

from __future__ import annotations

from transformers import PreTrainedModel

from layerprune.metrics.base import LayerScores, ScoringContext, data_free, register_metric
from layerprune.metrics.layerwise import LayerProvider, layer_provider


def magnitude_scores(layers: LayerProvider, power: int, weights_only: bool = False) -> list[float]:
    """score_i = Σ over every parameter tensor W of layer i (weights, biases, norms) of Σ |W|^p, in fp64.

    ``weights_only`` sums only the tensors whose name ends in ``weight`` (norm weights
    included, biases left out), as Lu et al.'s released code does; the paper's formula sums
    every parameter of the layer. The two differ only for families with biases (Qwen2's
    q/k/v, GPT-2, Phi, OPT, ...). Layers come one at a time from ``layers`` (streamed: one
    layer in memory at a time).
    """
    return [_layer_magnitude(layers, index, power, weights_only) for index in range(layers.num_layers)]


def _layer_magnitude(layers: LayerProvider, index: int, power: int, weights_only: bool) -> float:
    with layers.layer(index) as layer:
        return sum(
            float(parameter.detach().double().abs().pow(power).sum())
            for name, parameter in layer.named_parameters()
            if not weights_only or name.endswith("weight")
        )


@register_metric("magnitude-l1")
@data_free
def magnitude_l1(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """score_i = Σ_{W ∈ layer i} Σ |W|: the layer's entry-wise L1 norm. Layers with small weights go first."""
    scores = magnitude_scores(layer_provider(model, context), 1, context.magnitude_weights_only)
    return LayerScores("magnitude-l1", scores)


@register_metric("magnitude-l2")
@data_free
def magnitude_l2(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """score_i = Σ_{W ∈ layer i} Σ W²: the *squared* L2 norm, as in Lu et al. 2024 (no square root is taken)."""
    scores = magnitude_scores(layer_provider(model, context), 2, context.magnitude_weights_only)
    return LayerScores("magnitude-l2", scores)
