"""``layerprune replace``: LLM-Streamline — replace a block of layers by one trained layer and save the model."""

from __future__ import annotations

import argparse

from layerprune.calibration import CalibrationConfig, load_calibration
from layerprune.cli.common import (
    add_calibration_arguments,
    add_model_arguments,
    add_output_arguments,
    calibration_from_arguments,
    console,
    load_from_arguments,
    model_size,
    save_and_report_size,
)
from layerprune.merging.streamline import BLOCK_METRICS, TRAINING_LOSSES, StreamlineConfig, replace_block


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("replace", help="replace n+1 consecutive layers by one trained layer (Streamline)")
    add_model_arguments(parser)
    defaults = StreamlineConfig()
    parser.add_argument("--num-layers", type=int, required=True, help="layers to remove (block of K+1 → 1)")
    parser.add_argument(
        "--block-metric", default=defaults.metric, help=f"block choice: {', '.join(BLOCK_METRICS.names())}"
    )
    parser.add_argument("--train", default=defaults.train, help=f"training loss: {', '.join(TRAINING_LOSSES.names())}")
    parser.add_argument("--train-data", default=defaults.data, help="training text (any --calibration source)")
    parser.add_argument("--train-samples", type=int, default=defaults.train_samples, help="training windows per epoch")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="AdamW learning rate")
    parser.add_argument("--train-batch-size", type=int, default=defaults.batch_size, help="windows per training step")
    parser.add_argument(
        "--final-norm", action="store_true", help="compare the top block after the final norm (released code)"
    )
    add_calibration_arguments(parser)
    add_output_arguments(parser, "the new model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = StreamlineConfig(
        num_layers=args.num_layers,
        metric=args.block_metric,
        train=args.train,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.train_batch_size,
        seed=args.seed,
        final_norm=args.final_norm,
        data=args.train_data,
        train_samples=args.train_samples,
    )
    for registry, name in ((BLOCK_METRICS, config.metric), (TRAINING_LOSSES, config.train)):
        registry.get(name)  # fail on a bad name before loading anything
    model, tokenizer = load_from_arguments(args)
    before = model_size(model)
    training = load_calibration(
        tokenizer,
        CalibrationConfig(config.data, config.train_samples, args.seq_len, config.seed + 1),
    )
    result = replace_block(model, calibration_from_arguments(args, tokenizer), training, config)
    console.print(f"replaced [{result.first}–{result.last}] → {result.first}   {config.metric} {result.similarity:.4f}")
    if result.losses:
        console.print(f"training ({config.train}): loss {result.losses[0]:.4g} → {result.losses[-1]:.4g}")
    save_and_report_size(model, tokenizer, args, before)
    return 0
