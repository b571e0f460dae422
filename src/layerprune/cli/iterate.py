"""``layerprune iterate``: iterative prune → heal in the paper's ``1:k:n`` notation.

Example (remove 8 layers, 4 at a time, healing the last 3 layers and the head after each)::

    layerprune iterate --model default --metric reverse-order --schedule 1:4:8 \\
        --method partial --train-layers 3 --untie --data dolly --max-tokens 500000 --output runs/iter

Run the same command again to resume after an interruption.
"""

from __future__ import annotations

import argparse

from transformers import PreTrainedTokenizerBase

from layerprune.calibration import CalibrationConfig, load_calibration
from layerprune.cli.common import add_model_arguments, console, load_from_arguments
from layerprune.cli.heal import add_heal_arguments, heal_config_from_arguments
from layerprune.healing.iterate import IterateConfig, iterate
from layerprune.metrics import METRICS, ScoringContext
from layerprune.metrics.base import needs_calibration


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("iterate", help="iterative prune → heal schedule (1:k:n), resumable")
    add_model_arguments(parser)
    defaults = IterateConfig(output="")
    parser.add_argument("--schedule", default=defaults.schedule, help="1:k:n — remove n layers, k per step")
    parser.add_argument("--metric", default=defaults.metric, help=f"one of {', '.join(METRICS.names())}")
    parser.add_argument("--exclude-first", type=int, default=defaults.exclude_first, help="never remove these")
    parser.add_argument("--exclude-last", type=int, default=defaults.exclude_last)
    calibration = CalibrationConfig()
    group = parser.add_argument_group("calibration for data metrics (re-scored on each healed model)")
    group.add_argument("--calib", default=calibration.source, help="calibration text, as in 'layerprune score'")
    group.add_argument("--calib-samples", type=int, default=calibration.samples)
    group.add_argument("--calib-seq-len", type=int, default=calibration.seq_len)
    group.add_argument("--calib-batch-size", type=int, default=ScoringContext().batch_size)
    add_heal_arguments(parser)
    parser.add_argument("--output", required=True, help="run directory: step_1/, step_2/, …, schedule.json")
    parser.add_argument("--overwrite", action="store_true", help="replace existing step outputs")
    parser.add_argument("--save-dtype", default=None, help="dtype of the saved weights (default: keep)")
    parser.set_defaults(run=run)


def scoring_context(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> ScoringContext:
    """Scoring settings; calibration text is loaded only for metrics that need it."""
    calibration = None
    if needs_calibration(args.metric):
        config = CalibrationConfig(args.calib, args.calib_samples, args.calib_seq_len, args.seed)
        calibration = load_calibration(tokenizer, config)
    return ScoringContext(
        seed=args.seed,
        calibration=calibration,
        batch_size=args.calib_batch_size,
        exclude_first=args.exclude_first,
        exclude_last=args.exclude_last,
    )


def run(args: argparse.Namespace) -> int:
    config = IterateConfig(
        output=args.output,
        schedule=args.schedule,
        metric=args.metric,
        exclude_first=args.exclude_first,
        exclude_last=args.exclude_last,
        heal=heal_config_from_arguments(args, output=""),
    )
    model, tokenizer = load_from_arguments(args)
    _, records = iterate(model, tokenizer, config, scoring_context(args, tokenizer))
    for index, record in enumerate(records, start=1):
        heal = record["heal"]
        console.print(
            f"step {index}: removed source layers {record['removed_source_layers']}; healed {heal['steps']} steps, "
            f"best validation loss {heal['best_validation_loss']}"
        )
    console.print(f"final model: {args.output}/step_{len(records)}/model")
    return 0
