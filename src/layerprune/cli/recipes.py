"""``layerprune recipes``: the shipped recipes and studies, one line each (a name works in place of a path)."""

from __future__ import annotations

import argparse

from layerprune.cli.common import console
from layerprune.pipeline.recipe import shipped_names, shipped_path, summary_line


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("recipes", help="list the shipped recipes and studies")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for kind in ("recipes", "studies"):
        console.print(f"[bold]{kind}[/]")
        for name in shipped_names(kind):
            console.print(f"  {name:<22} {summary_line(shipped_path(kind, name))}", soft_wrap=True)
    return 0
