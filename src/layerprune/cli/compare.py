"""``layerprune compare``: several results files side by side, with deltas against the first."""

from __future__ import annotations

import argparse

from layerprune.cli.common import console
from layerprune.evaluation.results import compare_table, read_results


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="compare results files of `layerprune eval` side by side")
    parser.add_argument("results", nargs="+", help="results JSON files; the first is the baseline")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    runs = [read_results(path) for path in args.results]
    console.print(compare_table(runs, [run["model"] for run in runs]))
    return 0
