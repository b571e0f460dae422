"""Linear CKA between a layer's input and output (Kornblith et al. 2019), as a layer-importance metric."""

from __future__ import annotations

from transformers import PreTrainedModel

from layerprune.metrics.base import LayerScores, ScoringContext, register_metric
from layerprune.metrics.similarity import similarity_statistics


@register_metric("cka")
def cka_distance(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """score_i = 1 − CKA(x_i, x_i+1), with linear CKA(X, Y) = HSIC(X, Y) / √(HSIC(X, X)·HSIC(Y, Y)).

    HSIC(X, Y) = Σ_samples ⟨K_X, K_Y⟩_F with K_X = X_c X_cᵀ the Gram matrix of one sample's
    centred hidden states over its non-pad tokens (Kornblith et al. 2019, "Similarity of
    Neural Network Representations Revisited"). Summing HSIC over samples before dividing is
    the minibatch CKA of Nguyen et al. 2021 (with the biased HSIC), so the result does not
    depend on the batch size. The full matrix between all pairs of states comes from the same pass.
    """
    cka = similarity_statistics(model, context).cka_matrix()
    return LayerScores("cka", [float(1 - cka[i, i + 1]) for i in range(cka.shape[0] - 1)])
