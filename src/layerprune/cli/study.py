"""``layerprune study STUDY``: a base recipe over a grid of key paths, with shared work and a results table.

Example::

    layerprune study reassessing --output runs/reassessing --dry-run   # lists the 14 cells

Re-run the same command to resume a killed study, or after adding grid values: only new cells run.
``--set key.path=value`` changes every cell (e.g. ``--set evaluate.tasks=[zeroshot7]``); ``--overwrite``
starts from an empty study directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from layerprune.cli.common import console
from layerprune.cli.run import add_pipeline_arguments, default_output
from layerprune.pipeline.study import run_study


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("study", help="run a study (a grid of recipes) with shared work")
    parser.add_argument("study", help="a study .yaml file or a shipped name (see `layerprune recipes`)")
    add_pipeline_arguments(parser, "the study directory (default: runs/<study name>)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output or default_output(args.study))
    rows = run_study(args.study, output, dry_run=args.dry_run, overrides=args.overrides, overwrite=args.overwrite)
    if rows:
        console.print(f"{len(rows)} cells: {output / 'results.csv'}, {output / 'results.md'}")
    return 0
