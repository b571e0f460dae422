"""Block Influence (ShortGPT, Men et al. 2024): how much a layer changes the direction of the hidden state."""

from __future__ import annotations

from transformers import PreTrainedModel

from layerprune.metrics.base import LayerScores, ScoringContext, register_metric
from layerprune.metrics.similarity import similarity_statistics


@register_metric("bi")
def block_influence(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """BI_i = 1 − mean over samples and non-pad tokens t of cos(x_i,t, x_i+1,t).

    ``x_i`` is layer i's input and ``x_i+1`` its output, both taken **before** the final norm
    by forward hooks (``output_hidden_states`` applies the final norm to its last entry, which
    makes the last layer look important). Men et al. 2024, "ShortGPT: Layers in Large
    Language Models are More Redundant Than You Expect". Lower BI = remove first.
    """
    cosine = similarity_statistics(model, context).cosine_matrix()
    return LayerScores("bi", [float(1 - cosine[i, i + 1]) for i in range(cosine.shape[0] - 1)])


@register_metric("bi-global")
def block_influence_global(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """BI-global_i = 1 − cos(vec(X_i), vec(X_i+1)): one cosine over all non-pad tokens flattened together.

    This is the BI of Lu et al. 2024 ("Reassessing Layer Pruning in LLMs"), as their released
    code computes it; ShortGPT's own BI is the per-token mean, ``bi``. The flattened cosine
    weights each token by its norm, so a few tokens with very large activations (the first
    token, "attention sinks") dominate, where ``bi`` weights every token equally.
    """
    cosine = similarity_statistics(model, context).global_cosine_matrix()
    return LayerScores("bi-global", [float(1 - cosine[i, i + 1]) for i in range(cosine.shape[0] - 1)])
