"""``layerprune prune``: remove chosen layers and save a standard model."""

from __future__ import annotations

import argparse

from layerprune.cli.common import (
    add_model_arguments,
    console,
    load_from_arguments,
    parameter_count,
    parse_int_list,
)
from layerprune.errors import UserError
from layerprune.metrics import METRICS, ScoringContext
from layerprune.models import num_layers
from layerprune.saving import save_model
from layerprune.surgery import remove_layers


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("prune", help="remove decoder layers and save the smaller model")
    add_model_arguments(parser)
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--layers", help="layers to remove, e.g. 3,5,7 or 20-27")
    choice.add_argument("--num-layers", type=int, help="how many layers to remove, chosen by --method")
    parser.add_argument("--method", default="reverse-order", help="selection method: reverse-order or random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="directory for the pruned model")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument(
        "--save-dtype", dest="save_dtype", default=None, help="dtype of the saved weights (default: keep)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.num_layers is not None and args.num_layers < 1:
        raise UserError("--num-layers must be at least 1")
    explicit = parse_int_list(args.layers) if args.layers is not None else None
    metric = METRICS.get(args.method) if explicit is None else None
    model, tokenizer = load_from_arguments(args)
    before_layers, before_params = num_layers(model), parameter_count(model)
    if explicit is not None:
        indices, method = explicit, "manual"
    else:
        scores = metric(model, ScoringContext(seed=args.seed))
        indices, method = scores.removal_order(args.num_layers), args.method
    remove_layers(model, indices, method=method, seed=args.seed)
    save_model(model, tokenizer, args.output, overwrite=args.overwrite)
    console.print(f"removed layers {indices} ({method})")
    console.print(f"layers:     {before_layers} → {num_layers(model)}")
    console.print(f"parameters: {before_params:,} → {parameter_count(model):,}")
    console.print(f"saved to {args.output}")
    return 0
