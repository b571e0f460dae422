"""The ``layerprune`` command line: thin wrappers that build arguments and call the Python API.

Each subcommand is one module in this package with ``register(subparsers)``; add the
module's name to ``SUBCOMMANDS`` to expose it. User errors exit with code 2 and one line; Ctrl-C
(SIGINT) exits with 130 and SIGTERM with 143, after the temporary files of the run are removed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from transformers.utils import logging as transformers_logging

from layerprune.errors import UserError

SUBCOMMANDS = (
    "run",
    "study",
    "recipes",
    "data",
    "info",
    "prune",
    "score",
    "merge",
    "replace",
    "heal",
    "eval",
    "compare",
    "report",
    "width",
    "sparsify",
)


class ExactParser(argparse.ArgumentParser):
    """A subcommand parser that reads flags by their full name only (``--out`` is not ``--output``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerprune", description="Make LLMs shallower: score, prune, merge, heal, evaluate."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ExactParser)
    for name in SUBCOMMANDS:
        importlib.import_module(f"layerprune.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        transformers_logging.disable_progress_bar()
    try:
        return args.run(args) or 0
    except UserError as error:
        print(f"layerprune: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
