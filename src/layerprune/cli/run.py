"""``layerprune run RECIPE``: take a model through select → heal → evaluate → report, resumably.

Example (the README's main command)::

    layerprune run quickstart --output runs/quickstart

Re-run the same command after an interruption: finished stages are skipped, an unfinished
heal continues from its checkpoints. ``--set key.path=value`` changes one recipe key; that
stage and every stage after it re-run, and the plan says why.
"""

from __future__ import annotations

import argparse

from layerprune.pipeline.recipe import load_recipe
from layerprune.pipeline.run import run as run_recipe


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a recipe (a file or a shipped name) into a run directory")
    parser.add_argument("recipe", help="a recipe .yaml/.json file or a shipped name (see `layerprune recipes`)")
    add_pipeline_arguments(parser, "the run directory (default: runs/<recipe name>)")
    parser.set_defaults(run=run)


def add_pipeline_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--output``, ``--dry-run``, ``--overwrite`` and ``--set`` (shared by ``run`` and ``study``)."""
    parser.add_argument("--output", default=None, help=what)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one recipe key (repeatable; in a study, of every cell), e.g. --set heal.train.max_steps=20",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; load no model")
    parser.add_argument("--overwrite", action="store_true", help="replace an output that is not this run")


def default_output(source: str) -> str:
    from pathlib import Path

    return str(Path("runs") / Path(source).name.removesuffix(".yaml").removesuffix(".json"))


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    run_recipe(recipe, args.output or default_output(args.recipe), overwrite=args.overwrite, dry_run=args.dry_run)
    return 0
