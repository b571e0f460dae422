"""``layerprune data``: every named data source, where it resolves now and its size (see :mod:`layerprune.data`)."""

from __future__ import annotations

import argparse

from rich.table import Table

from layerprune.cli.common import console
from layerprune.data import ENV_VAR, describe_sources


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help=f"list the named data sources and where each resolves (--data-dir, ${ENV_VAR}, embedded, Hub)"
    )
    parser.add_argument("--data-dir", default=None, help="a data folder searched first, as `eval --data-dir` does")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    table = Table(title="named data (role: test = perplexity, train = calibration/healing, task = lm-eval files)")
    for column in ("name", "role", "resolves to", "size"):
        table.add_column(column, overflow="fold")
    for name, role, where, size in describe_sources(args.data_dir):
        table.add_row(name, role, where, "" if size is None else f"{size / 1e6:.2f} MB")
    console.print(table)
    return 0
