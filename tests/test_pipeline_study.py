"""``layerprune study``: a grid over key paths, with shared scoring and a results table."""

from __future__ import annotations

import csv

import pytest
import yaml

from layerprune.cli import main
from layerprune.pipeline.study import load_study, run_study
from pipeline_support import tiny_recipe, tiny_workspace


@pytest.fixture
def workspace(tmp_path):
    return tiny_workspace(tmp_path)


def _study(workspace, grid) -> str:
    base = tiny_recipe(workspace, report=None)
    base["heal"]["train"]["max_steps"] = 2
    path = workspace / "study.yaml"
    path.write_text(yaml.safe_dump({"description": "tiny", "base": base, "grid": grid}))
    return str(path)


def test_shipped_reassessing_study_has_14_cells() -> None:
    _, cells = load_study("reassessing")
    assert len(cells) == 14
    assert {cell.recipe.select.metric for cell in cells} == {
        "reverse-order", "random", "magnitude-l1", "magnitude-l2", "taylor", "ppl", "bi"
    }  # fmt: skip


def test_a_grid_key_that_does_not_exist_exits_2(workspace, capsys) -> None:
    study = _study(workspace, {"select.metrc": ["bi"]})
    assert main(["study", study, "--output", str(workspace / "out"), "--dry-run"]) == 2
    assert "metrc" in capsys.readouterr().err
    assert not (workspace / "out").exists()


def test_two_by_two_study_writes_four_rows_and_plots(workspace) -> None:
    grid = {"select.metric": ["bi", "reverse-order"], "heal.method.train_layers": [1, 2]}
    rows = run_study(_study(workspace, grid), workspace / "out")
    assert len(rows) == 4
    with (workspace / "out" / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4
    assert {(row["select.metric"], row["heal.method.train_layers"]) for row in table} == {
        ("bi", "1"), ("bi", "2"), ("reverse-order", "1"), ("reverse-order", "2")
    }  # fmt: skip
    for figure in ("quality.png", "cost.png", "layers.png"):
        assert (workspace / "out" / figure).stat().st_size > 0, figure
    assert "quality.png" in (workspace / "out" / "results.md").read_text()
