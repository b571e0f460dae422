"""The public Python API: one import for each pipeline stage."""

from layerprune.metrics import METRICS, LayerScores, ScoringContext
from layerprune.models import load_model
from layerprune.provenance import get_provenance
from layerprune.saving import save_model
from layerprune.surgery import keep_layers, remove_layers

__all__ = [
    "METRICS",
    "LayerScores",
    "ScoringContext",
    "get_provenance",
    "keep_layers",
    "load_model",
    "remove_layers",
    "save_model",
]
