"""The public Python API: one import for each pipeline stage."""

from layerprune.healing import DataConfig, HealConfig, LossConfig, MethodConfig, TrainConfig, heal
from layerprune.healing.iterate import IterateConfig, iterate
from layerprune.metrics import METRICS, LayerScores, ScoringContext
from layerprune.models import load_model
from layerprune.provenance import get_provenance
from layerprune.saving import save_model
from layerprune.surgery import keep_layers, remove_layers

__all__ = [
    "METRICS",
    "DataConfig",
    "HealConfig",
    "IterateConfig",
    "LayerScores",
    "LossConfig",
    "MethodConfig",
    "ScoringContext",
    "TrainConfig",
    "get_provenance",
    "heal",
    "iterate",
    "keep_layers",
    "load_model",
    "remove_layers",
    "save_model",
]
