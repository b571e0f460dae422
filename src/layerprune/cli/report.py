"""``layerprune report``: figures and a Markdown summary from scores and results files."""

from __future__ import annotations

import argparse

from layerprune.cli.common import add_output_arguments, check_output, console
from layerprune.report import write_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="heatmaps, score plots and a Markdown summary")
    parser.add_argument("--scores", help="a scores.json written by `layerprune score`")
    parser.add_argument("--results", nargs="*", default=[], help="results.json files written by `layerprune eval`")
    parser.add_argument("--remove", type=int, default=8, help="how many layers the removal-order table lists")
    add_output_arguments(parser, "report.md and the figures", model=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_output(args)
    output = write_report(args.output, args.scores, args.results, remove=args.remove, overwrite=args.overwrite)
    console.print(f"report written to {output / 'report.md'}")
    return 0
