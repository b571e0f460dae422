"""One CLI vocabulary: the real parsers of every subcommand, walked flag by flag.

Every command that writes takes ``--output`` (none ``--out``); a flag string means one thing
(one dest, one default) in every command; a concept (dest) has one flag string. The sole
second name is ``width --method`` (issue 12's contract), an alias of ``--width-method``.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import pytest

from layerprune.calibration import CalibrationConfig
from layerprune.cli import SUBCOMMANDS, build_parser
from layerprune.width.prune import WIDTH_CALIBRATION

READ_ONLY = {"recipes", "data", "info", "compare"}  # print only
ALIASES = {("width", "--method"): "--width-method"}
# The calibration group takes its defaults from the command's own settings class; width
# (SlimGPT) and sparsify (Wanda/SparseGPT/OWL) calibrate on 32 windows, the others on 10.
OWN_DEFAULTS = {("width", "--samples"), ("sparsify", "--samples")}


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def flag_uses() -> list[tuple[str, str, argparse.Action]]:
    """``(command, flag string, action)`` for every optional flag of every subcommand (``--help`` aside).

    A ``--x/--no-x`` switch is one flag (``--x``): argparse derives its negation.
    """
    return [
        (command, flag, action)
        for command, parser in subcommand_parsers().items()
        for action in parser._actions
        for flag in (
            action.option_strings[:1] if isinstance(action, argparse.BooleanOptionalAction) else action.option_strings
        )
        if flag not in ("-h", "--help")
    ]


def test_every_subcommand_is_walked() -> None:
    assert set(subcommand_parsers()) == set(SUBCOMMANDS)


def test_every_writing_command_takes_output_and_none_takes_out() -> None:
    flags = defaultdict(set)
    for command, flag, _ in flag_uses():
        flags[command].add(flag)
    writers = set(SUBCOMMANDS) - READ_ONLY
    assert {c for c in writers if "--output" not in flags[c]} == set()
    assert {c for c in SUBCOMMANDS if "--out" in flags[c]} == set()
    assert {c for c in READ_ONLY if "--output" in flags[c]} == set()


def test_abbreviations_are_not_read() -> None:
    """``--out`` is not silently read as ``--output``, nor ``--met`` as ``--metric``."""
    parser = build_parser()
    with pytest.raises(SystemExit) as raised:
        parser.parse_args(["score", "--out", "scores.json"])
    assert raised.value.code == 2
    assert parser.parse_args(["score", "--output", "scores.json"]).output == "scores.json"


def test_one_flag_one_dest_and_one_dest_one_flag() -> None:
    dests, flags = defaultdict(set), defaultdict(set)
    for command, flag, action in flag_uses():
        name = ALIASES.get((command, flag), flag)
        dests[name].add(action.dest)
        flags[action.dest].add(name)
    assert {flag: d for flag, d in dests.items() if len(d) > 1} == {}
    assert {dest: f for dest, f in flags.items() if len(f) > 1} == {}


def test_aliases_are_only_the_documented_one() -> None:
    multiple = {
        (command, flag)
        for command, parser in subcommand_parsers().items()
        for action in parser._actions
        if len(action.option_strings) > 1 and action.dest != "help"
        if not isinstance(action, argparse.BooleanOptionalAction)
        for flag in action.option_strings
        if flag != action.option_strings[0]
    }
    assert multiple == set(ALIASES)
    args = build_parser().parse_args(["width", "--method", "magnitude", "--ratio", "0.5", "--output", "w"])
    assert args.width_method == "magnitude"


def test_one_default_per_flag() -> None:
    defaults = defaultdict(dict)
    for command, flag, action in flag_uses():
        if (command, flag) not in OWN_DEFAULTS:
            defaults[ALIASES.get((command, flag), flag)][command] = action.default
    differing = {flag: by for flag, by in defaults.items() if any(v != next(iter(by.values())) for v in by.values())}
    assert differing == {}


def test_calibration_group_comes_from_each_commands_settings() -> None:
    """Every calibrating command has the four flags, defaulting to its settings class's calibration."""
    parsers = subcommand_parsers()
    own = {"width": WIDTH_CALIBRATION, "sparsify": WIDTH_CALIBRATION}
    assert own["width"].samples == own["sparsify"].samples == 32 != CalibrationConfig().samples
    for command in ("score", "prune", "merge", "replace", "width", "sparsify"):
        actions = {action.dest: action.default for action in parsers[command]._actions}
        found = CalibrationConfig(actions["calibration"], actions["samples"], actions["seq_len"], actions["seed"])
        assert found == own.get(command, CalibrationConfig()), command
