"""``layerprune merge``: fuse runs of layers (SLM or LaCo) and save a standard model."""

from __future__ import annotations

import argparse

from layerprune.cli.common import (
    add_calibration_arguments,
    add_model_arguments,
    add_output_arguments,
    add_streaming_arguments,
    calibration_from_arguments,
    check_output,
    console,
    export_saved,
    load_from_arguments,
    model_size,
    save_and_report_size,
    streaming_from_arguments,
)
from layerprune.errors import UserError
from layerprune.merging import MERGE_METHODS, MERGE_OPERATORS, SIMILARITIES, MergeConfig, format_groups, merge_model
from layerprune.merging.stack import apply_stack, fixed_stack
from layerprune.models import decoder_layers, num_layers
from layerprune.pipeline.recipe import parse_layer_list


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge", help="merge runs of similar layers (SLM, LaCo) and save the model")
    add_model_arguments(parser)
    defaults = MergeConfig()
    parser.add_argument("--merge-method", default=defaults.method, help=f"one of {', '.join(MERGE_METHODS.names())}")
    stop = parser.add_mutually_exclusive_group(required=True)
    stop.add_argument("--threshold", type=float, help="similarity a merged model must keep")
    stop.add_argument("--num-layers", type=int, help="remove exactly K layers (bisection over the threshold)")
    stop.add_argument("--ratio", type=float, help="remove round(R × layers) layers")
    stop.add_argument("--groups", help="fuse these fixed runs of layers, e.g. 3-5,10-12 (no search; may stream)")
    parser.add_argument("--merge-op", default=defaults.operator, help=f"one of {', '.join(MERGE_OPERATORS.names())}")
    parser.add_argument("--similarity", default=defaults.similarity, help=f"one of {', '.join(SIMILARITIES.names())}")
    parser.add_argument(
        "--merge-batch-size", type=int, default=defaults.batch_size, help="calibration windows per forward"
    )
    parser.add_argument("--merge-last", action="store_true", help="SLM: let windows include the last layer")
    laco = defaults.laco
    parser.add_argument("--laco-c", type=int, default=laco.merge_layers, help="LaCo C: layers fused per merge")
    parser.add_argument("--laco-interval", type=int, default=laco.interval, help="LaCo I: step after a merge")
    parser.add_argument("--laco-lowest", type=int, default=laco.lowest, help="LaCo L: lowest layer to merge")
    parser.add_argument("--laco-highest", type=int, default=laco.highest, help="LaCo H: highest layer (default last)")
    parser.add_argument(
        "--laco-rule", default=laco.rule, help="LaCo group bounds and reset: ours (Algorithm 1) or notebook (released)"
    )
    add_calibration_arguments(parser)
    add_streaming_arguments(parser)
    add_output_arguments(parser, "the merged model")
    parser.set_defaults(run=run)


def config_from_arguments(args: argparse.Namespace) -> MergeConfig:
    config = MergeConfig(
        method=args.merge_method,
        threshold=args.threshold,
        num_layers=args.num_layers,
        ratio=args.ratio,
        operator=args.merge_op,
        similarity=args.similarity,
        batch_size=args.merge_batch_size,
    )
    config.slm.protect_last = not args.merge_last
    config.laco.merge_layers, config.laco.interval = args.laco_c, args.laco_interval
    config.laco.lowest, config.laco.highest = args.laco_lowest, args.laco_highest
    config.laco.rule = args.laco_rule
    return config


def run(args: argparse.Namespace) -> int:
    if args.groups is not None:
        return _run_fixed_groups(args, parse_groups(args.groups))
    if args.streaming:
        raise UserError("streamed merging needs fixed --groups; the SLM and LaCo searches run the model in memory")
    config = config_from_arguments(args)
    model, tokenizer = load_from_arguments(args)
    target = config.validate(num_layers(model))
    before = model_size(model)
    result = merge_model(model, calibration_from_arguments(args, tokenizer), config)
    for step in result.stack.steps:
        console.print(f"step: fused input layers {step.first}–{step.last}, similarity {step.similarity:.4f}")
    if result.target is not None:
        console.print(result.target.describe(target))
    console.print(f"groups:     {', '.join(format_groups(result.stack)) or 'none'}")
    console.print(f"threshold:  {result.threshold:.6f} ({config.similarity}, {config.method}, {config.operator})")
    console.print(f"search:     {result.evaluations} candidates in {result.seconds:.1f} s")
    save_and_report_size(model, tokenizer, args, before)
    return 0


def parse_groups(text: str) -> list[tuple[int, int]]:
    """``"3-5,10-12"`` → ``[(3, 5), (10, 12)]``."""
    groups = []
    for part in text.split(","):
        layers = parse_layer_list(part)
        if "-" not in part:
            raise UserError(f"merge group {part.strip()!r} is one layer; write a run like 3-5")
        groups.append((layers[0], layers[-1]))
    return groups


def _run_fixed_groups(args: argparse.Namespace, groups: list[tuple[int, int]]) -> int:
    """Fuse fixed groups with ``--merge-op``: tensor by tensor when streaming, else through the layer stack."""
    from layerprune.streaming.surgery import stack_groups, stream_merge

    MERGE_OPERATORS.get(args.merge_op)
    if streaming_from_arguments(args):
        check_output(args)
        options = dict(overwrite=args.overwrite, dtype=args.dtype, cache_dir=args.cache_dir)
        stream_merge(args.model, args.output, groups, operator=args.merge_op, **options)
        console.print(f"fused groups {args.groups} ({args.merge_op}); saved to {args.output}")
        export_saved(args, args.output)
        return 0
    model, tokenizer = load_from_arguments(args)
    stack_groups(groups, num_layers(model))
    before = model_size(model)
    apply_stack(model, fixed_stack(decoder_layers(model), groups, args.merge_op), operator=args.merge_op)
    console.print(f"fused groups {args.groups} ({args.merge_op})")
    save_and_report_size(model, tokenizer, args, before)
    return 0
