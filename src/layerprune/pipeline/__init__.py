"""The pipeline: a validated recipe taken through select → heal → evaluate → report, resumable; studies over grids."""

from layerprune.pipeline.recipe import Recipe, load_recipe, validate_recipe
from layerprune.pipeline.run import RunResult, run
from layerprune.pipeline.stages import STAGES, Selection, Stage, heal_model, prune, select_layers

__all__ = [
    "STAGES",
    "Recipe",
    "RunResult",
    "Selection",
    "Stage",
    "heal_model",
    "load_recipe",
    "prune",
    "run",
    "select_layers",
    "validate_recipe",
]
