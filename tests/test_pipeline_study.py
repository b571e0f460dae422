"""``layerprune study``: a grid over key paths, with shared scoring and a results table."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import pytest
import yaml

from layerprune.cli import main
from layerprune.pipeline.recipe import shipped_names
from layerprune.pipeline.study import load_study, row_of, run_study
from layerprune.report import write_study_report
from pipeline_support import tiny_recipe, tiny_workspace

run_module = importlib.import_module("layerprune.pipeline.run")


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


def test_shipped_reassessing_qwen_study_has_10_cells_at_6_of_24_layers() -> None:
    _, cells = load_study("reassessing-qwen")
    assert len(cells) == 10
    assert {cell.recipe.select.metric for cell in cells} == {"reverse-order", "taylor", "ppl", "bi", "angular"}
    assert {cell.recipe.heal.method.name for cell in cells} == {"partial", "lora"}
    for cell in cells:
        assert (cell.recipe.select.num_layers, cell.recipe.select.ratio) == (6, None)
        assert cell.recipe.heal.train.max_tokens == 16384
        assert cell.recipe.evaluate.tasks == ["arc_easy", "piqa"] and cell.recipe.evaluate.harness.limit == 200
        assert (cell.recipe.evaluate.perplexity.seq_len, cell.recipe.evaluate.perplexity.max_windows) == (512, 16)
        assert cell.recipe.model.spec.endswith("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")


@pytest.mark.parametrize("name", shipped_names("studies"))
def test_every_shipped_study_passes_dry_run(name, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    spec = load_study(name)[1][0].recipe.model.spec
    # a study on a fetched model (reassessing-qwen: bench/fetch_qwen.py) is checked on the embedded one when absent
    fetched = spec == "default" or Path(spec).expanduser().exists()
    override = [] if fetched else ["--set", "model.spec=default"]
    assert main(["study", name, "--output", str(tmp_path / name), "--dry-run", *override]) == 0
    cells = len(load_study(name)[1])
    assert capsys.readouterr().out.startswith(f"{cells} cells")
    assert not (tmp_path / name).exists()


def test_shipped_benchmark_studies_have_their_cells() -> None:
    """The studies that replaced bench/: 2 selections; 2 selections × 2 methods × 3 losses; 9 merge/delete;
    best-recipe: 3 losses × 2 methods × 2 learning rates; its selection lever: 3 selections on each model."""
    names = ("evaluation", "healing", "merging", "best-recipe", "best-recipe-selection", "best-recipe-qwen")
    assert [len(load_study(name)[1]) for name in names] == [2, 12, 9, 12, 3, 3]


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


def test_an_interrupted_study_leaves_the_table_of_its_finished_cells(workspace, monkeypatch) -> None:
    study_module = importlib.import_module("layerprune.pipeline.study")
    real_run, calls = study_module.run_recipe, []

    def run_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(study_module, "run_recipe", run_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_study(_study(workspace, {"select.metric": ["bi", "reverse-order"]}), workspace / "out")
    with (workspace / "out" / "results.csv").open() as handle:
        assert [row["select.metric"] for row in csv.DictReader(handle)] == ["bi"]
    assert "(1 of 2 cells so far)" in (workspace / "out" / "results.md").read_text()


def test_set_changes_every_cell_and_a_misspelled_key_exits_2(workspace, capsys) -> None:
    study = _study(workspace, {"select.metric": ["bi", "reverse-order"]})
    _, cells = load_study(study, ["heal.train.max_steps=3", "evaluate.perplexity.max_windows=1"])
    assert [cell.recipe.heal.train.max_steps for cell in cells] == [3, 3]
    assert [cell.recipe.evaluate.perplexity.max_windows for cell in cells] == [1, 1]
    misspelled = ["--set", "heal.trian.max_steps=3"]
    assert main(["study", study, "--output", str(workspace / "out"), "--dry-run", *misspelled]) == 2
    assert "trian" in capsys.readouterr().err
    assert not (workspace / "out").exists()


def test_overwrite_starts_from_an_empty_study_directory(workspace, monkeypatch) -> None:
    output = workspace / "out"
    (output / "cache" / "stale-0").mkdir(parents=True)
    monkeypatch.setattr("layerprune.pipeline.study.run_recipe", lambda *a, **k: None)
    monkeypatch.setattr("layerprune.pipeline.study.write_study_report", lambda *a, **k: None)
    run_study(_study(workspace, {"select.metric": ["bi"]}), output, overwrite=True)
    assert not (output / "cache" / "stale-0").exists()


def _evaluation(ppl: float, arc: float, arc_stderr: float) -> dict:
    return {
        "num_layers": 18,
        "removed_layers": [1, 2],
        "perplexity": {"wikitext2": {"ppl": ppl}},
        "tasks": {"arc_easy": {"acc": arc, "acc_stderr": arc_stderr, "acc_norm": 0.1}},
        "suites": {},
    }


def test_a_study_row_carries_task_accuracy_and_its_stderr_into_table_and_figure(tmp_path) -> None:
    cells = load_study("reassessing")[1][:2]
    rows = []
    for cell, (ppl, arc) in zip(cells, [(181.7, 0.365), (989.2, 0.275)], strict=True):
        directory = tmp_path / cell.name
        directory.mkdir()
        results = {"final": _evaluation(ppl, arc, 0.0341), "dense": _evaluation(55.38, 0.47, 0.0354)}
        (directory / "results.json").write_text(json.dumps(results))
        rows.append(row_of(cell, directory))
    assert (rows[0]["final_arc_easy"], rows[0]["final_arc_easy_stderr"], rows[0]["dense_arc_easy"]) == (
        0.365, 0.0341, 0.47
    )  # fmt: skip
    assert rows[1]["final_ppl_wikitext2"] == 989.2
    text = write_study_report(tmp_path, rows, "two cells").read_text()
    header = text.splitlines()[2]
    assert "final_arc_easy" in header and "stderr" not in header
    assert "| 0.365 ± 0.034 |" in text and "| 0.47 ± 0.035 |" in text
    assert (tmp_path / "final.png").stat().st_size > 0 and "(final.png)" in text
