"""Evaluation: zero-shot tasks through lm-eval (hub or local data), perplexity, speed and memory, one results schema."""

from layerprune.evaluation.harness import HarnessOptions, run_tasks
from layerprune.evaluation.local_data import LOCAL_TASKS, prepare_local_task
from layerprune.evaluation.perplexity import PPL_DATASETS, PerplexityOptions, perplexity
from layerprune.evaluation.results import compare_table, read_results, results_table, write_results
from layerprune.evaluation.runner import EvalConfig, evaluate, speed_report
from layerprune.evaluation.speed import SpeedOptions, flops_per_token, measure_speed
from layerprune.evaluation.tasks import SUITES, Suite

__all__ = [
    "LOCAL_TASKS",
    "PPL_DATASETS",
    "SUITES",
    "EvalConfig",
    "HarnessOptions",
    "PerplexityOptions",
    "SpeedOptions",
    "Suite",
    "compare_table",
    "evaluate",
    "flops_per_token",
    "measure_speed",
    "perplexity",
    "prepare_local_task",
    "read_results",
    "results_table",
    "run_tasks",
    "speed_report",
    "write_results",
]
