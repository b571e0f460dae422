"""``layerprune width``: remove attention heads and FFN channels (SlimGPT or a baseline) and save."""

from __future__ import annotations

import argparse
from typing import get_args

from layerprune.cli.common import (
    add_calibration_arguments,
    add_model_arguments,
    add_output_arguments,
    calibration_config_from_arguments,
    console,
    load_from_arguments,
    model_size,
    save_and_report_size,
)
from layerprune.width import WIDTH_METHODS, WidthConfig, WidthResult, width_prune
from layerprune.width.prune import SCHEDULES, WIDTH_CALIBRATION, ChannelBatches, HeadScore


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = WidthConfig()
    parser = subparsers.add_parser("width", help="remove attention heads and FFN channels (width pruning)")
    add_model_arguments(parser)
    parser.add_argument(
        "--width-method",
        "--method",  # issue 12's contract: `layerprune width --method`
        default=defaults.method,
        choices=WIDTH_METHODS.names(),
        help="width method",
    )
    parser.add_argument(
        "--ratio", type=float, required=True, help="mean fraction of layer parameters removed, in (0, 1)"
    )
    parser.add_argument("--schedule", default=defaults.schedule, choices=SCHEDULES, help="per-layer ratios")
    parser.add_argument("--min-ratio", type=float, default=None, help="log-increase: first layer's ratio r0")
    parser.add_argument("--max-ratio", type=float, default=None, help="log-increase: last layer's ratio r_max")
    parser.add_argument("--damp", type=float, default=defaults.damp, help="Hessian damping, fraction of mean diag")
    parser.add_argument(
        "--head-score",
        default=defaults.head_score,
        choices=get_args(HeadScore),
        help="SlimGPT head score: Σ‖W_j‖²/L_jj² (released) or the joint OBS error (exact)",
    )
    parser.add_argument(
        "--channel-batches",
        default=defaults.channel_batches,
        choices=get_args(ChannelBatches),
        help="SlimGPT channel batches: the released schedule (floor 64) or halving down to 1",
    )
    add_calibration_arguments(parser, WIDTH_CALIBRATION)
    add_output_arguments(parser, "the width-pruned model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = WidthConfig(
        method=args.width_method,
        ratio=args.ratio,
        schedule=args.schedule,
        min_ratio=args.min_ratio,
        max_ratio=args.max_ratio,
        damp=args.damp,
        head_score=args.head_score,
        channel_batches=args.channel_batches,
    )
    model, tokenizer = load_from_arguments(args)
    before = model_size(model)
    result = width_prune(model, tokenizer, config, calibration_config_from_arguments(args))
    print_widths(result)
    save_and_report_size(model, tokenizer, args, before)
    return 0


def print_widths(result: WidthResult) -> None:
    for index, (ratio, width) in enumerate(zip(result.ratios, result.widths, strict=True)):
        console.print(
            f"layer {index:>3}: ratio {ratio:.3f}  heads {width.num_attention_heads} "
            f"(kv {width.num_key_value_heads})  channels {width.intermediate_size}"
        )
    kind = "uniform (standard config)" if result.uniform else "per-layer widths (auto_map modeling module)"
    console.print(f"widths: {kind}; pruning took {result.seconds:.1f} s")
