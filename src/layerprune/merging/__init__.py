"""Layer merging and replacement: merge operators, SLM, LaCo, target mode and LLM-Streamline."""

from layerprune.merging.candidates import CachedEvaluator, deep_copy_final_hidden, final_hidden
from layerprune.merging.laco import LacoConfig, laco_search
from layerprune.merging.merge import MERGE_METHODS, MergeConfig, MergeResult, merge_model
from layerprune.merging.operators import MERGE_OPERATORS, merge_layers
from layerprune.merging.similarity import SIMILARITIES
from layerprune.merging.slm import SlmConfig, slm_search
from layerprune.merging.stack import Group, LayerStack, MergeStep, apply_stack, format_groups
from layerprune.merging.target import TargetConfig, TargetResult, search_for_count

__all__ = [
    "MERGE_METHODS",
    "MERGE_OPERATORS",
    "SIMILARITIES",
    "CachedEvaluator",
    "Group",
    "LacoConfig",
    "LayerStack",
    "MergeConfig",
    "MergeResult",
    "MergeStep",
    "SlmConfig",
    "TargetConfig",
    "TargetResult",
    "apply_stack",
    "deep_copy_final_hidden",
    "final_hidden",
    "format_groups",
    "laco_search",
    "merge_layers",
    "merge_model",
    "search_for_count",
    "slm_search",
]
