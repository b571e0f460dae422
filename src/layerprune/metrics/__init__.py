"""Layer-importance metrics. Each metric lives in its own module and registers itself."""

from layerprune.metrics import angular, bi, cka, magnitude, order, ppl, sleb, taylor  # noqa: F401  (registration)
from layerprune.metrics.base import (
    METRICS,
    LayerScores,
    ScoringContext,
    candidate_layers,
    layers_for_ratio,
    needs_calibration,
    register_metric,
)
from layerprune.metrics.scores import Scores
from layerprune.metrics.scoring import resolve_metric_names, score

__all__ = [
    "METRICS",
    "LayerScores",
    "Scores",
    "ScoringContext",
    "candidate_layers",
    "layers_for_ratio",
    "needs_calibration",
    "register_metric",
    "resolve_metric_names",
    "score",
]
