"""Run the surgery gate on every causal-LM model type and pin the outcomes (tests/family_matrix_expected.json).

Usage: ``PYTHONPATH=src python scripts/family_matrix.py`` from the repository root; prints a count per outcome.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from family_matrix import gate  # noqa: E402
from tiny_families import causal_lm_types  # noqa: E402


def main() -> None:
    outcomes = {model_type: gate(model_type) for model_type in causal_lm_types()}
    (TESTS / "family_matrix_expected.json").write_text(json.dumps(outcomes, indent=1, sort_keys=True) + "\n")
    print(collections.Counter(outcome.split(":", 1)[0] for outcome in outcomes.values()))


if __name__ == "__main__":
    main()
