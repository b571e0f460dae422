"""The public Python API: one import for each pipeline stage."""

from layerprune.calibration import CalibrationConfig, CalibrationSet, load_calibration
from layerprune.metrics import METRICS, LayerScores, Scores, ScoringContext, score
from layerprune.models import load_model
from layerprune.provenance import get_provenance
from layerprune.saving import save_model
from layerprune.surgery import keep_layers, remove_layers

__all__ = [
    "METRICS",
    "CalibrationConfig",
    "CalibrationSet",
    "LayerScores",
    "Scores",
    "ScoringContext",
    "get_provenance",
    "keep_layers",
    "load_calibration",
    "load_model",
    "remove_layers",
    "save_model",
    "score",
]
