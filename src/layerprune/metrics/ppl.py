"""Perplexity after removing one layer (one-shot removal scoring, e.g. Kim et al. 2024 "PPL")."""

from __future__ import annotations

from transformers import PreTrainedModel

from layerprune.metrics.base import LayerScores, ScoringContext, register_metric, scans_removals
from layerprune.metrics.layerwise import layerwise_pass
from layerprune.metrics.removal import RemovalSearch, perplexity
from layerprune.models import num_layers


@register_metric("ppl")
@scans_removals
def removal_perplexity(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """score_i = exp(mean NLL of the calibration tokens with layer i removed); lowest goes first.

    Kim et al. 2024 ("Shortened LLaMA") score blocks by the perplexity of the model
    without them. Their code rebuilds the model once per layer; here every candidate goes
    through one layer-wise pass (:mod:`~layerprune.metrics.layerwise`: L layer loads,
    ≈ L²/2 layer forwards; equal to the rebuild to fp32 rounding, tested). Calibration
    text is never an evaluation test split by default.
    """
    search = RemovalSearch(layerwise_pass(model, context, "ppl"))
    table = search.nll_table(list(range(num_layers(model))), "ppl: removing each layer")
    return LayerScores("ppl", [perplexity(table[i]) for i in sorted(table)])
