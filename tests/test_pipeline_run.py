"""``layerprune run``: stages, skip/resume/invalidation by fingerprint, a SIGKILL during heal, schedules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from layerprune.cli import main
from layerprune.models import load_model, num_layers
from layerprune.pipeline import run, validate_recipe
from layerprune.provenance import read_record
from pipeline_support import tiny_recipe, tiny_workspace, write_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path) -> Path:
    return tiny_workspace(tmp_path)


def statuses(result) -> dict[str, str]:
    return {planned.name: planned.status for planned in result.plan}


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_run_writes_the_run_directory_then_skips_everything(workspace) -> None:
    recipe = validate_recipe(tiny_recipe(workspace))
    first = run(recipe, workspace / "run")
    assert statuses(first) == dict.fromkeys(["dense", "score", "select", "heal", "evaluate", "report"], "run")
    out = workspace / "run"
    model, _ = load_model(str(out / "model"))
    assert num_layers(model) == 3
    record = read_record(out / "model")
    assert [step.get("method", step["stage"]) for step in record["steps"]] == ["bi", "heal"]
    results = json.loads((out / "results.json").read_text())
    assert results["final"]["num_layers"] == 3 and results["dense"]["num_layers"] == 4
    assert results["final"]["perplexity"] and results["stages"]["heal"]["steps"] == 6
    assert (out / "report" / "report.md").is_file() and (out / "report" / "loss.png").is_file()
    assert (
        validate_recipe(json.loads(json.dumps(__import__("yaml").safe_load((out / "recipe.yaml").read_text()))))
        == recipe
    )
    again = run(recipe, out)
    assert set(statuses(again).values()) == {"cached"}


def test_changed_keys_rerun_their_stage_and_the_stages_after(workspace, capsys) -> None:
    path = write_recipe(workspace / "r.yaml", tiny_recipe(workspace))
    out = workspace / "run"
    assert main(["run", str(path), "--output", str(out)]) == 0
    heal_record = (out / "stages" / "heal" / "stage.json").read_text()
    heal_weights = out / "stages" / "heal" / "model" / "model.safetensors"
    heal_mtime = heal_weights.stat().st_mtime_ns
    capsys.readouterr()

    assert main(["run", str(path), "--output", str(out), "--set", "evaluate.perplexity.max_windows=2"]) == 0
    plan = capsys.readouterr().out
    assert "changed evaluate.perplexity.max_windows: 4 → 2" in plan
    records = {p.name: json.loads((p / "stage.json").read_text()) for p in (out / "stages").iterdir()}
    assert records["evaluate"]["section"]["evaluate"]["perplexity"]["max_windows"] == 2
    assert (out / "stages" / "heal" / "stage.json").read_text() == heal_record
    assert heal_weights.stat().st_mtime_ns == heal_mtime

    result = run(validate_recipe(tiny_recipe(workspace, evaluate=records["evaluate"]["section"]["evaluate"])), out)
    assert statuses(result) == {
        "dense": "cached", "score": "cached", "select": "cached", "heal": "cached", "evaluate": "cached",
        "report": "cached",
    }  # fmt: skip
    recipe = tiny_recipe(workspace)
    recipe["heal"]["loss"] = "kd"
    result = run(validate_recipe(recipe), out)
    assert statuses(result) == {
        "dense": "re-run", "score": "cached", "select": "cached", "heal": "re-run", "evaluate": "re-run",
        "report": "re-run",
    }  # fmt: skip
    heal = next(p for p in result.plan if p.name == "heal")
    assert heal.reason == "changed heal.loss.name: 'ce' → 'kd'"
    assert result.records["heal"]["summary"]["settings"]["loss"]["name"] == "kd"


def _run_command(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "layerprune", "run", str(recipe), "--output", str(out)]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.slow
def test_sigkill_during_heal_then_rerun_equals_an_uninterrupted_run(workspace) -> None:
    recipe = tiny_recipe(workspace)
    recipe["heal"]["train"].update(max_steps=80, eval_steps=5)
    recipe["evaluate"] = None
    path = write_recipe(workspace / "r.yaml", recipe)
    subprocess.run(_run_command(path, workspace / "straight"), env=_environment(), check=True, capture_output=True)

    killed = workspace / "killed"
    process = subprocess.Popen(
        _run_command(path, killed), env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = killed / "stages" / "heal" / "checkpoints" / "checkpoint-5" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.is_file(), "the heal never reached its first checkpoint"
    assert not (killed / "stages" / "heal" / "stage.json").exists(), "the heal finished before the kill"

    rerun = subprocess.run(_run_command(path, killed), env=_environment(), check=True, capture_output=True, text=True)
    assert "resume" in rerun.stdout and "continues from its checkpoints" in rerun.stdout
    straight, resumed = weights(workspace / "straight" / "model"), weights(killed / "model")
    assert straight.keys() == resumed.keys()
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name


def test_iterative_schedule_rescores_between_heals(workspace) -> None:
    recipe = tiny_recipe(workspace, select={"metric": "bi", "num_layers": 2}, evaluate=None, report=None)
    recipe["heal"]["schedule"] = "1:1:2"
    recipe["heal"]["train"]["max_steps"] = 2
    result = run(validate_recipe(recipe), workspace / "iter")
    summary = result.records["heal"]["summary"]
    assert [step["step"] for step in summary["steps"]] == [1, 2]
    assert summary["steps"][1]["layers"] == [3, 2]
    assert (workspace / "iter" / "stages" / "heal" / "step_1" / "model").is_dir()
    model, _ = load_model(str(workspace / "iter" / "model"))
    assert num_layers(model) == 2
    steps = read_record(workspace / "iter" / "model")["steps"]
    assert [step["stage"] for step in steps] == ["prune", "heal", "prune", "heal"]
    assert [step["method"] for step in steps if step["stage"] == "prune"] == ["bi", "bi"]


@pytest.mark.parametrize(
    "select",
    [
        {"layers": "1-2"},
        {"merge": {"method": "slm", "num_layers": 1, "batch_size": 2}},
        {"replace": {"num_layers": 1, "train_samples": 4, "batch_size": 2}},
    ],
)
def test_other_selections_run_without_heal(workspace, select) -> None:
    recipe = tiny_recipe(workspace, select=select, heal=None, report=None)
    recipe["evaluate"]["dense"] = False
    result = run(validate_recipe(recipe), workspace / "out")
    assert list(statuses(result)) == ["select", "evaluate"]
    expected = 2 if "layers" in select else 3
    assert result.results["final"]["num_layers"] == expected
