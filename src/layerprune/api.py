"""The public Python API: one import for each pipeline stage."""

from layerprune.merging import MERGE_OPERATORS, LacoConfig, MergeConfig, SlmConfig, merge_model
from layerprune.merging.streamline import StreamlineConfig, replace_block
from layerprune.metrics import METRICS, LayerScores, ScoringContext
from layerprune.models import load_model
from layerprune.provenance import get_provenance
from layerprune.saving import save_model
from layerprune.surgery import keep_layers, remove_layers

__all__ = [
    "MERGE_OPERATORS",
    "METRICS",
    "LacoConfig",
    "LayerScores",
    "MergeConfig",
    "ScoringContext",
    "SlmConfig",
    "StreamlineConfig",
    "get_provenance",
    "keep_layers",
    "load_model",
    "merge_model",
    "remove_layers",
    "replace_block",
    "save_model",
]
