"""``layerprune score``: score every layer with one or more metrics, print a table, write scores.json."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from layerprune.cli.common import (
    add_calibration_arguments,
    add_model_arguments,
    add_output_file_argument,
    add_streaming_arguments,
    calibration_config_from_arguments,
    console,
    load_from_arguments,
    streaming_device,
    streaming_from_arguments,
)
from layerprune.metrics import METRICS, Scores, ScoringContext, score
from layerprune.metrics.base import ANGULAR_TOKENS, SCORING_PRESETS

_BEST_BLOCKS_SHOWN = 8


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """Scoring options shared by ``score`` and ``prune``; defaults come from :class:`ScoringContext`."""
    defaults = ScoringContext()
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="calibration windows per forward")
    parser.add_argument(
        "--angular-tokens",
        choices=ANGULAR_TOKENS,
        default=defaults.angular_tokens,
        help="angular distance at the last non-pad token (Gromov et al.) or averaged over all tokens",
    )
    parser.add_argument("--sleb-steps", type=int, default=None, help="greedy SLEB removals (default: L/4)")
    parser.add_argument(
        "--exclude-first", type=int, default=defaults.exclude_first, help="never remove the first N layers"
    )
    parser.add_argument(
        "--exclude-last", type=int, default=defaults.exclude_last, help="never remove the last N layers"
    )
    parser.add_argument(
        "--preset",
        default=defaults.preset,
        help=f"{' or '.join(SCORING_PRESETS.names())}: 'paper' turns on every released-code option below",
    )
    parser.add_argument("--sleb-exclude-ends", action="store_true", help="sleb never removes the first/last layer")
    parser.add_argument(
        "--magnitude-weights-only", action="store_true", help="magnitude sums only *weight tensors (no biases)"
    )


def scoring_settings(args: argparse.Namespace) -> dict[str, Any]:
    """:class:`ScoringContext` fields from the parsed arguments."""
    return dict(
        seed=args.seed,
        batch_size=args.batch_size,
        angular_tokens=args.angular_tokens,
        sleb_steps=args.sleb_steps,
        exclude_first=args.exclude_first,
        exclude_last=args.exclude_last,
        preset=args.preset,
        sleb_exclude_ends=args.sleb_exclude_ends,
        magnitude_weights_only=args.magnitude_weights_only,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="score layer importance with one or more metrics")
    add_model_arguments(parser)
    parser.add_argument(
        "--metrics", default="all", help=f"comma-separated metrics or 'all' ({', '.join(METRICS.names())})"
    )
    add_calibration_arguments(parser)
    add_scoring_arguments(parser)
    add_streaming_arguments(parser)
    add_output_file_argument(parser, "every score, table and setting")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = scoring_settings(args)
    if streaming_from_arguments(args):
        scores = streamed_scores(args, args.metrics, settings)
    else:
        model, tokenizer = load_from_arguments(args)  # an unwritable --output fails before the model loads
        scores = score(model, tokenizer, args.metrics, calib=calibration_config_from_arguments(args), **settings)
    print_scores(scores, args.exclude_first, args.exclude_last)
    if args.output:
        scores.save(args.output)
        console.print(f"wrote {args.output}")
    return 0


def streamed_scores(args: argparse.Namespace, metrics: str | list[str], settings: dict[str, Any]) -> Scores:
    """Score ``args.model`` with one decoder layer loaded at a time, on ``--device``."""
    from layerprune.streaming.scoring import stream_score

    calibration = calibration_config_from_arguments(args)
    return stream_score(args.model, metrics, calibration, streaming_device(args), cache_dir=args.cache_dir, **settings)


def print_scores(scores: Scores, exclude_first: int = 0, exclude_last: int = 0) -> None:
    """A per-layer table (rank 1 = removed first) and, for angular, the best block per size."""
    names = list(scores.metrics)
    table = Table(title=f"layer scores (lower = remove first) — {scores.model}")
    table.add_column("layer", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    ranks = {name: _ranks(scores, name, exclude_first, exclude_last) for name in names}
    for layer in range(scores.num_layers):
        cells = [f"{scores.metrics[name].scores[layer]:.3g} ({ranks[name].get(layer, '–')})" for name in names]
        table.add_row(str(layer), *cells)
    console.print(table)
    console.print("(n) = removal rank among the candidate layers")
    if "angular" in scores.metrics:
        largest = min(_BEST_BLOCKS_SHOWN, scores.num_layers - exclude_first - exclude_last, scores.num_layers - 1)
        for n in range(1, largest + 1):
            block = scores.metrics["angular"].best_block(n, exclude_first, exclude_last)
            console.print(f"angular best block of {n}: layers {block[0]}–{block[-1]}")


def _ranks(scores: Scores, name: str, exclude_first: int, exclude_last: int) -> dict[int, int]:
    ranking = scores.metrics[name].ranking(exclude_first, exclude_last)
    return {layer: rank for rank, layer in enumerate(ranking, 1)}
