"""Angular distance between the input and the output of a block of n layers (Gromov et al. 2024)."""

from __future__ import annotations

from transformers import PreTrainedModel

from layerprune.metrics.base import LayerScores, ScoringContext, register_metric
from layerprune.metrics.similarity import similarity_statistics


@register_metric("angular")
def angular_distance(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """d(l, n) = arccos(cos(x_l, x_l+n)) / π, averaged over samples, for every block size n.

    ``x_l`` is the hidden state entering layer l and ``x_l+n`` the one leaving layer
    l+n−1 (before the final norm), at the last non-pad token of each sample
    (``angular_tokens="all"``: averaged over every non-pad token). The best block of n
    layers is argmin_l d(l, n); removing it drops layers l … l+n−1. The table for every n
    comes from the same pass. The per-layer score is d(l, 1). Gromov et al. 2024, "The
    Unreasonable Ineffectiveness of the Deeper Layers". Code that indexes
    ``output_hidden_states`` is easily off by one and compares a post-norm last entry; here
    the states come from hooks and the block is exactly the n layers it removes.
    """
    angles = similarity_statistics(model, context).angular_matrix()
    count = angles.shape[0] - 1
    blocks = {n: [float(angles[start, start + n]) for start in range(count - n + 1)] for n in range(1, count)}
    return LayerScores("angular", blocks[1], blocks=blocks)
