"""``run`` and ``study`` against bad input: exit 2, one line, no model loaded and nothing written.

Each probe builds a tiny workspace (a saved model, a text file, the recipe), runs the CLI in
process with model loading patched to fail the test, and compares the workspace before and
after. The probes are the roots of issue 25 item 7 (and item 5 for run and study outputs).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from layerprune.cli import main
from pipeline_support import tiny_recipe, tiny_workspace

run_module = importlib.import_module("layerprune.pipeline.run")


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    return tiny_workspace(tmp_path)


def _snapshot(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in root.rglob("*")}


def refused(root: Path, argv: list[str], message: str, capsys) -> str:
    """Run ``argv`` (``{w}`` is ``root``): exit 2, one line holding ``message``, nothing under ``root`` changed."""
    before = _snapshot(root)
    capsys.readouterr()
    code = main([part.replace("{w}", str(root)) for part in argv])
    err = capsys.readouterr().err
    assert code == 2, f"exit {code}: {err}"
    assert err.startswith("layerprune: error: ") and err.count("\n") == 1, err
    assert message.replace("{w}", str(root)) in err, err
    assert _snapshot(root) == before, "nothing is written"
    return err


def _recipe(root: Path, **sections) -> str:
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(root, **sections)))
    return str(path)


def _study(root: Path, grid: dict, **extra) -> str:
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump({"base": tiny_recipe(root), "grid": grid, **extra}))
    return str(path)


# --- item 5: an output that holds, or is held by, the recipe's own model -------------------

OUTPUT_ON_MODEL = [
    ("{w}/tiny", "output {w}/tiny is the input {w}/tiny"),
    ("{w}/tiny/run", "output {w}/tiny/run is inside the input {w}/tiny"),
    ("{w}", "output {w} contains the input {w}/tiny"),
]


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
@pytest.mark.parametrize(("output", "message"), OUTPUT_ON_MODEL)
def test_run_output_on_its_own_model_is_refused(workspace, capsys, output, message, dry_run) -> None:
    refused(workspace, ["run", _recipe(workspace), "--output", output, "--overwrite", *dry_run], message, capsys)


@pytest.mark.parametrize(("output", "message"), OUTPUT_ON_MODEL)
def test_study_output_on_its_own_model_is_refused(workspace, capsys, output, message) -> None:
    study = _study(workspace, {"select.metric": ["bi", "angular"]})
    refused(workspace, ["study", study, "--output", output, "--overwrite"], message, capsys)
