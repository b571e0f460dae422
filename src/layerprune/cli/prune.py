"""``layerprune prune``: remove chosen layers and save a standard model."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from layerprune.cli.common import (
    add_calibration_arguments,
    add_model_arguments,
    add_output_arguments,
    add_streaming_arguments,
    calibration_config_from_arguments,
    check_gguf_output,
    console,
    export_saved,
    is_gguf_output,
    load_from_arguments,
    model_size,
    save_and_report_size,
    streaming_from_arguments,
)
from layerprune.cli.score import add_scoring_arguments, scoring_settings, streamed_scores
from layerprune.errors import UserError
from layerprune.metrics import METRICS, LayerScores, Scores, layers_for_ratio, needs_calibration, score
from layerprune.models import num_layers
from layerprune.pipeline.recipe import parse_layer_list
from layerprune.surgery import remove_layers

Scorer = Callable[[list[str], dict[str, Any]], Scores]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("prune", help="remove decoder layers and save the smaller model")
    add_model_arguments(parser)
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--layers", help="layers to remove, e.g. 3,5,7 or 20-27")
    choice.add_argument("--num-layers", type=int, help="how many layers to remove, chosen by --metric")
    choice.add_argument(
        "--ratio", type=float, help="fraction of layers to remove: k = round(ratio·L), halves up (0.25 of 30 → 8)"
    )
    parser.add_argument(
        "--metric",
        default="reverse-order",
        help="selection metric (see `layerprune score --help`); a block metric removes its best contiguous block",
    )
    parser.add_argument("--scores", default=None, help="reuse a scores.json written by `layerprune score`")
    add_calibration_arguments(parser)
    add_scoring_arguments(parser)
    add_streaming_arguments(parser)
    parser.add_argument(
        "--whole-periods",
        action="store_true",
        help="GGUF output of a family whose attention pattern llama.cpp derives from the layer index "
        "(gemma2/3, cohere2, ...): remove whole periods, the metric choosing which",
    )
    add_output_arguments(parser, "the pruned model; a .gguf file prunes a GGUF directly, keeping its quantization")
    parser.set_defaults(run=run, gguf_output=True)


def run(args: argparse.Namespace) -> int:
    if args.num_layers is not None and args.num_layers < 1:
        raise UserError("--num-layers must be at least 1")
    explicit = parse_layer_list(args.layers) if args.layers is not None else None
    if explicit is None:
        METRICS.get(args.metric)  # an unknown name fails before the model loads
    elif args.whole_periods:
        raise UserError("--whole-periods lets --metric choose the periods; it does not go with --layers")
    if is_gguf_output(args):
        return _run_gguf(args, explicit)
    if args.whole_periods:
        raise UserError("--whole-periods applies to a .gguf output only (a directory keeps each layer's type)")
    if streaming_from_arguments(args):
        return _run_streamed(args, explicit)
    model, tokenizer = load_from_arguments(args)
    before = model_size(model)
    if explicit is not None:
        indices, details = explicit, {"method": "manual"}
    else:
        calibration = calibration_config_from_arguments(args)
        indices, details = _select(num_layers(model), args, lambda metrics, settings: score(
            model, tokenizer, metrics, calib=calibration, **settings))  # fmt: skip
    remove_layers(model, indices, **details)
    console.print(f"removed layers {indices} ({details['method']})")
    save_and_report_size(model, tokenizer, args, before)
    return 0


def _run_streamed(args: argparse.Namespace, explicit: list[int] | None) -> int:
    """Select (streamed scoring) and remove the layers tensor by tensor, without loading the model."""
    from layerprune.streaming import open_checkpoint, stream_remove

    count = open_checkpoint(args.model, args.cache_dir).num_layers
    scorer = functools.partial(streamed_scores, args)
    indices, details = (explicit, {"method": "manual"}) if explicit is not None else _select(count, args, scorer)
    options = dict(overwrite=args.overwrite, dtype=args.dtype, cache_dir=args.cache_dir)
    stream_remove(args.model, args.output, indices, **options, **details)
    console.print(f"removed layers {indices} ({details['method']})")
    console.print(f"layers:     {count} → {count - len(indices)}")
    console.print(f"saved to {args.output}")
    export_saved(args, args.output)
    return 0


def _run_gguf(args: argparse.Namespace, explicit: list[int] | None) -> int:
    """Direct GGUF surgery: select on the dequantized model (as for any model), then copy the kept blocks."""
    from layerprune.gguf.files import block_count, check_gguf
    from layerprune.gguf.patterns import whole_period_removal
    from layerprune.gguf.surgery import file_pattern, gguf_source, plan_removal, remove_gguf_layers

    source = gguf_source(args.model)
    check_gguf_output(args)
    reader = check_gguf(source)
    count, pattern = block_count(reader), file_pattern(reader)
    if explicit is not None:
        plan_removal(reader, explicit)  # a bad list fails before anything else
        indices, details = explicit, {"method": "manual"}
    else:
        indices, details = _select(count, args, _gguf_scorer(args))
        if args.whole_periods:
            indices = whole_period_removal(
                indices, details, pattern.period, count, args.exclude_first, args.exclude_last
            )
    summary = remove_gguf_layers(source, args.output, indices, details, overwrite=args.overwrite)
    console.print(f"removed layers {indices} ({details['method']}), quantization kept")
    console.print(f"layers:     {summary['layers'][0]} → {summary['layers'][1]}")
    console.print(f"file size:  {summary['file_bytes'][0]:,} → {summary['file_bytes'][1]:,} bytes")
    console.print(f"saved to {args.output}")
    return 0


def _gguf_scorer(args: argparse.Namespace) -> Scorer:
    if streaming_from_arguments(args):
        return functools.partial(streamed_scores, args)

    def scorer(metrics: list[str], settings: dict[str, Any]) -> Scores:
        model, tokenizer = load_from_arguments(args)
        return score(model, tokenizer, metrics, calib=calibration_config_from_arguments(args), **settings)

    return scorer


def _select(count: int, args: argparse.Namespace, scorer: Scorer) -> tuple[list[int], dict[str, Any]]:
    """The layers ``--metric`` removes first (scored by ``scorer``), and the details recorded in ``layerprune.json``."""
    k = args.num_layers if args.ratio is None else layers_for_ratio(args.ratio, count)
    scores = _metric_scores(count, args, k, scorer)
    indices = scores.removal_order(k, args.exclude_first, args.exclude_last)
    details: dict[str, Any] = dict(
        method=args.metric,
        k=k,
        ratio=args.ratio,
        exclude_first=args.exclude_first,
        exclude_last=args.exclude_last,
        seed=args.seed,
        scores=scores.scores,
    )
    if scores.blocks is not None:
        details["block_scores"] = scores.blocks[k]
    if args.scores:
        details["scores_file"] = args.scores
    elif needs_calibration(args.metric):
        details["calibration"] = asdict(calibration_config_from_arguments(args))
    return indices, details


def _metric_scores(count: int, args: argparse.Namespace, k: int, scorer: Scorer) -> LayerScores:
    if args.scores:
        loaded = Scores.load(args.scores)
        if loaded.num_layers != count:
            raise UserError(f"{args.scores} scores {loaded.num_layers} layers but the model has {count}")
        return loaded.get(args.metric)
    settings = scoring_settings(args)
    if args.metric == "sleb" and settings["sleb_steps"] is None:
        settings["sleb_steps"] = k
    return scorer([args.metric], settings).get(args.metric)
