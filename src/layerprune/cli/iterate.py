"""``layerprune iterate``: iterative prune → heal in the paper's ``1:k:n`` notation.

Example (remove 8 layers, 4 at a time, healing the last 3 layers and the head after each)::

    layerprune iterate --model default --metric reverse-order --schedule 1:4:8 \\
        --method partial --train-layers 3 --untie --data dolly --max-tokens 500000 --output runs/iter

Run the same command again to resume after an interruption.
"""

from __future__ import annotations

import argparse

from layerprune.cli.common import add_model_arguments, console, load_from_arguments
from layerprune.cli.heal import add_heal_arguments, heal_config_from_arguments
from layerprune.healing.iterate import IterateConfig, iterate
from layerprune.metrics import METRICS, ScoringContext


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("iterate", help="iterative prune → heal schedule (1:k:n), resumable")
    add_model_arguments(parser)
    defaults = IterateConfig(output="")
    parser.add_argument("--schedule", default=defaults.schedule, help="1:k:n — remove n layers, k per step")
    parser.add_argument("--metric", default=defaults.metric, help=f"one of {', '.join(METRICS.names())}")
    parser.add_argument("--exclude-first", type=int, default=defaults.exclude_first, help="never remove these")
    parser.add_argument("--exclude-last", type=int, default=defaults.exclude_last)
    add_heal_arguments(parser)
    parser.add_argument("--output", required=True, help="run directory: step_1/, step_2/, …, schedule.json")
    parser.add_argument("--overwrite", action="store_true", help="replace existing step outputs")
    parser.add_argument("--save-dtype", default=None, help="dtype of the saved weights (default: keep)")
    parser.set_defaults(run=run)


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
    _, records = iterate(model, tokenizer, config, ScoringContext(seed=args.seed))
    for index, record in enumerate(records, start=1):
        heal = record["heal"]
        console.print(
            f"step {index}: removed source layers {record['removed_source_layers']}; healed {heal['steps']} steps, "
            f"best validation loss {heal['best_validation_loss']}"
        )
    console.print(f"final model: {args.output}/step_{len(records)}/model")
    return 0
