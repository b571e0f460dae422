"""Layer-importance metrics. Each metric lives in its own module and registers itself."""

from layerprune.metrics import order  # noqa: F401  (registers the metrics)
from layerprune.metrics.base import METRICS, LayerScores, ScoringContext, candidate_layers, register_metric

__all__ = ["METRICS", "LayerScores", "ScoringContext", "candidate_layers", "register_metric"]
