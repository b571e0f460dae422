"""``layerprune info``: architecture (the inferred entry in full, for a family the table lacks), layer count,
parameters and per-layer attention types."""

from __future__ import annotations

import argparse

from layerprune.cli.common import add_model_arguments, console, load_from_arguments, parameter_count
from layerprune.models import get_architecture, num_layers, per_layer_attention_types
from layerprune.provenance import get_provenance


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a model's architecture and layers")
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model, _ = load_from_arguments(args)
    arch = get_architecture(model)
    provenance = get_provenance(model)
    console.print(f"model:        {args.model}")
    console.print(f"architecture: {arch.family} ({type(model).__name__})")
    if arch.inferred:
        console.print("inferred entry (no table entry for this family):")
        for line in arch.describe():
            console.print(f"  {line}", markup=False)
    console.print(f"layers:       {num_layers(model)}")
    console.print(f"parameters:   {parameter_count(model):,}")
    console.print(f"dtype:        {model.dtype}")
    if provenance.removed_layers:
        console.print(
            f"source:       {provenance.source} ({provenance.source_num_layers} layers; "
            f"removed {provenance.removed_layers})"
        )
    types = per_layer_attention_types(model)
    if types is not None:
        for index, kind in enumerate(types):
            console.print(f"  layer {index:>3}: {kind}")
    return 0
