"""``layerprune sparsify``: zero weights (Wanda, SparseGPT, magnitude) with a layer-wise allocation and save."""

from __future__ import annotations

import argparse
from typing import get_args, get_type_hints

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
from layerprune.width import ALLOCATIONS, SPARSE_PRUNERS, SparsifyConfig, sparsify
from layerprune.width.prune import WIDTH_CALIBRATION
from layerprune.width.sparse import PATTERNS
from layerprune.width.sparsify import VARIANTS

VARIANT_HELP = dict(
    zip(
        VARIANTS,
        (
            "OWL: outlier threshold over the layer's pooled scores (released) or each matrix's",
            "AlphaPruning: Hill x_min at the ESD peak by KS distance (released) or the median",
            "AlphaPruning: ratio map S·(1±ε) (released) or S±ε",
            "DSA: layer score over pooled element scores (released) or the mean per matrix",
            "SparseGPT: one mask threshold per 128-column block (released) or per row",
        ),
        strict=True,
    )
)


def variant_choices(name: str) -> tuple[str, ...]:
    """The values a variant field takes (from :class:`SparsifyConfig`'s annotation)."""
    return get_args(get_type_hints(SparsifyConfig)[name])


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = SparsifyConfig()
    parser = subparsers.add_parser("sparsify", help="unstructured or 2:4 sparsity with layer-wise allocation")
    add_model_arguments(parser)
    parser.add_argument("--pruner", default=defaults.pruner, choices=SPARSE_PRUNERS.names(), help="base pruner")
    parser.add_argument("--sparsity", type=float, required=True, help="mean fraction of weights zeroed, in (0, 1)")
    parser.add_argument("--pattern", default=defaults.pattern, choices=PATTERNS, help="sparsity pattern")
    parser.add_argument(
        "--allocation", default=defaults.allocation, choices=ALLOCATIONS.names(), help="per-layer sparsity"
    )
    parser.add_argument("--owl-m", type=float, default=defaults.owl_m, help="OWL outlier threshold M")
    parser.add_argument("--owl-lambda", type=float, default=defaults.owl_lambda, help="OWL spread λ")
    parser.add_argument("--alpha-epsilon", type=float, default=defaults.alpha_epsilon, help="AlphaPruning spread ε")
    parser.add_argument("--damp", type=float, default=defaults.damp, help="SparseGPT Hessian damping")
    for name, help_text in VARIANT_HELP.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            default=getattr(defaults, name),
            choices=variant_choices(name),
            help=help_text,
        )
    parser.add_argument("--generations", type=int, default=defaults.dsa_generations, help="DSA search generations")
    parser.add_argument("--population", type=int, default=defaults.dsa_population, help="DSA population size")
    parser.add_argument("--dsa-samples", type=int, default=defaults.dsa_samples, help="DSA fitness windows")
    parser.add_argument("--dsa-function", default=None, help="DSA: name (or .json) of the function to reuse/save")
    parser.add_argument("--dsa-state", default=None, help="DSA: search state file (resumed if present)")
    add_calibration_arguments(parser, WIDTH_CALIBRATION)
    add_output_arguments(parser, "the sparse model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = SparsifyConfig(
        pruner=args.pruner,
        sparsity=args.sparsity,
        pattern=args.pattern,
        allocation=args.allocation,
        owl_m=args.owl_m,
        owl_lambda=args.owl_lambda,
        alpha_epsilon=args.alpha_epsilon,
        damp=args.damp,
        **{name: getattr(args, name) for name in VARIANT_HELP},
        dsa_function=args.dsa_function,
        dsa_state=args.dsa_state,
        dsa_generations=args.generations,
        dsa_population=args.population,
        dsa_samples=args.dsa_samples,
    )
    model, tokenizer = load_from_arguments(args)
    before = model_size(model)
    result = sparsify(model, tokenizer, config, calibration_config_from_arguments(args))
    for index, (wanted, got) in enumerate(zip(result.sparsities, result.achieved, strict=True)):
        console.print(f"layer {index:>3}: sparsity {wanted:.3f} (zeros {got:.3f})")
    if result.function is not None:
        console.print(f"allocation function: {result.function}")
    console.print(f"sparsify took {result.seconds:.1f} s; weights stay dense with zeros in place")
    save_and_report_size(model, tokenizer, args, before)
    return 0
