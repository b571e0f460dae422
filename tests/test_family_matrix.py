"""The surgery gate on every causal-LM model type of the installed transformers (issue 11).

``family_matrix_expected.json`` pins each family's outcome: ``pass``, ``refused: <reason>``
(a specific reason, never the generic "no architecture entry"), ``no-build`` (the generic
shrinker cannot build a tiny model) or a known ``fail``. A regression, a family whose outcome
changes, or a model type that a newer transformers adds fails here loudly; regenerate the
file with ``python scripts/family_matrix.py`` after checking the difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers

from family_matrix import gate
from layerprune.errors import UserError
from layerprune.surgery import remove_layers
from tiny_families import causal_lm_types, tiny_family_model

EXPECTED = json.loads((Path(__file__).with_name("family_matrix_expected.json")).read_text())


def _kind(outcome: str) -> str:
    return outcome.split(":", 1)[0]


PINNED_TRANSFORMERS = next(
    line.split("==")[1].strip()
    for line in (Path(__file__).resolve().parents[1] / "scripts" / "constraints.txt").read_text().splitlines()
    if line.startswith("transformers==")
)


def test_every_installed_family_is_pinned() -> None:
    installed, pinned = set(causal_lm_types()), set(EXPECTED)
    if transformers.__version__ != PINNED_TRANSFORMERS and installed != pinned:
        pytest.skip(
            f"the matrix is pinned to transformers {PINNED_TRANSFORMERS} (scripts/constraints.txt), not "
            f"{transformers.__version__}: new {sorted(installed - pinned)}, gone {sorted(pinned - installed)}; "
            "run python scripts/family_matrix.py to re-pin"
        )
    assert sorted(installed) == sorted(pinned), "a model type was added or removed: regenerate the pins"


def test_at_least_95_percent_of_buildable_families_pass() -> None:
    built = [outcome for outcome in EXPECTED.values() if _kind(outcome) != "no-build"]
    assert sum(_kind(outcome) == "pass" for outcome in built) >= 0.95 * len(built)
    assert all("no architecture entry" not in outcome for outcome in EXPECTED.values())


@pytest.mark.slow
@pytest.mark.parametrize("model_type", sorted(EXPECTED))
def test_family_gate(model_type: str) -> None:
    expected = EXPECTED[model_type]
    outcome = gate(model_type)
    if _kind(expected) in ("pass", "refused"):
        assert outcome == expected
    else:
        assert _kind(outcome) == _kind(expected), outcome


def test_a_cut_that_transformers_cannot_build_is_refused_with_its_error() -> None:
    """Zamba ties its hybrid layers' shared block to the first one; transformers 5 cannot build a Zamba with one."""
    with pytest.raises(UserError, match=r"'zamba': transformers cannot build its config after the cut \(ValueError"):
        remove_layers(tiny_family_model("zamba"), [0, 1])
