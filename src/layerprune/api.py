"""The public Python API: one import for each pipeline stage."""

from layerprune.calibration import CalibrationConfig, CalibrationSet, load_calibration
from layerprune.evaluation import (
    EvalConfig,
    HarnessOptions,
    PerplexityOptions,
    SpeedOptions,
    compare_table,
    evaluate,
    measure_speed,
    perplexity,
    read_results,
    results_table,
    run_tasks,
    write_results,
)
from layerprune.healing import DataConfig, HealConfig, LossConfig, MethodConfig, TrainConfig, heal
from layerprune.merging import MERGE_OPERATORS, LacoConfig, MergeConfig, SlmConfig, merge_model
from layerprune.merging.streamline import StreamlineConfig, replace_block
from layerprune.metrics import METRICS, LayerScores, Scores, ScoringContext, score
from layerprune.models import load_model
from layerprune.pipeline import Recipe, heal_model, load_recipe, prune, run, select_layers
from layerprune.pipeline.study import run_study
from layerprune.provenance import get_provenance
from layerprune.report import write_report
from layerprune.saving import save_model
from layerprune.surgery import keep_layers, remove_layers
from layerprune.width import SparsifyConfig, WidthConfig, sparsify, width_prune

__all__ = [
    "MERGE_OPERATORS",
    "METRICS",
    "CalibrationConfig",
    "CalibrationSet",
    "DataConfig",
    "EvalConfig",
    "HarnessOptions",
    "HealConfig",
    "LacoConfig",
    "LayerScores",
    "LossConfig",
    "MergeConfig",
    "MethodConfig",
    "PerplexityOptions",
    "Recipe",
    "Scores",
    "ScoringContext",
    "SlmConfig",
    "SparsifyConfig",
    "SpeedOptions",
    "StreamlineConfig",
    "TrainConfig",
    "WidthConfig",
    "compare_table",
    "evaluate",
    "get_provenance",
    "heal",
    "heal_model",
    "keep_layers",
    "load_calibration",
    "load_model",
    "load_recipe",
    "measure_speed",
    "merge_model",
    "perplexity",
    "prune",
    "read_results",
    "remove_layers",
    "replace_block",
    "results_table",
    "run",
    "run_study",
    "run_tasks",
    "save_model",
    "score",
    "select_layers",
    "sparsify",
    "width_prune",
    "write_report",
    "write_results",
]
