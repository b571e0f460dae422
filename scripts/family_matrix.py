"""Run the surgery gate on every causal-LM model type; pin the outcomes and write the README's family table.

Usage, from the repository root: ``PYTHONPATH=src python scripts/family_matrix.py`` runs the gate and
writes ``tests/family_matrix_expected.json``; ``--table-only`` rewrites the README table from that file.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
EXPECTED = TESTS / "family_matrix_expected.json"
BEGIN, END = "<!-- family-matrix:begin -->", "<!-- family-matrix:end -->"
sys.path.insert(0, str(TESTS))


def run_gate() -> dict[str, str]:
    from family_matrix import gate
    from tiny_families import causal_lm_types

    outcomes = {model_type: gate(model_type) for model_type in causal_lm_types()}
    EXPECTED.write_text(json.dumps(outcomes, indent=1, sort_keys=True) + "\n")
    return outcomes


def table(outcomes: dict[str, str]) -> str:
    """The Markdown summary: counts, the passing families, and each other family with its outcome."""
    kinds = collections.defaultdict(list)
    for model_type, outcome in sorted(outcomes.items()):
        kinds[outcome.split(":", 1)[0]].append((model_type, outcome.partition(": ")[2]))
    built = len(outcomes) - len(kinds["no-build"])
    lines = [
        f"Of the {len(outcomes)} causal-LM model types in the installed transformers, {built} build as tiny "
        f"models from their config classes; **{len(kinds['pass'])} pass the gate** (pruned = dense with the "
        "removed layers bypassed, per-layer fields kept, reload equality, cached decoding = full recompute), "
        f"{len(kinds['refused'])} are refused with a reason, {len(kinds['fail'])} still fail.",
        "",
        "**Pass:** " + ", ".join(f"`{name}`" for name, _ in kinds["pass"]),
        "",
        "| family | outcome |",
        "|---|---|",
    ]
    for kind in ("refused", "fail", "no-build"):
        lines += [f"| `{name}` | {kind}: {reason.replace('|', '/')} |" for name, reason in kinds[kind]]
    return "\n".join(lines)


def write_readme_table(outcomes: dict[str, str]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    readme.write_text(text[:start] + "\n" + table(outcomes) + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table-only", action="store_true", help="rewrite the README table from the pinned file")
    args = parser.parse_args()
    outcomes = json.loads(EXPECTED.read_text()) if args.table_only else run_gate()
    write_readme_table(outcomes)
    print(collections.Counter(outcome.split(":", 1)[0] for outcome in outcomes.values()))


if __name__ == "__main__":
    main()
