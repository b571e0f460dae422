"""``run`` and ``study`` against bad input: exit 2, one line, no model loaded and nothing written.

Each probe builds a tiny workspace (a saved model, a text file, the recipe), runs the CLI in
process with model loading patched to fail the test, and compares the workspace before and
after. The probes are the roots of issue 25 item 7 (and item 5 for run and study outputs).
"""

from __future__ import annotations

import dataclasses
import importlib
import signal
from pathlib import Path

import pytest
import yaml

from layerprune.cli import main
from layerprune.config import ConfigError
from layerprune.pipeline.study import check_names, load_study
from pipeline_support import tiny_recipe, tiny_workspace
from process_support import stopped_in

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


# --- item 7: the whole recipe is checked before any work ------------------------------------

RECIPE_PROBES = [
    ("model.spec", "{w}/nothing", "model.spec {w}/nothing not found"),
    ("heal.teacher", "{w}/nothing", "heal.teacher {w}/nothing not found"),
    ("heal.train.scheduler", "cosin", "heal.train.scheduler: unknown learning-rate scheduler 'cosin'. Did you mean"),
    ("heal.data.format", "nosuchformat", "data.format: unknown data format 'nosuchformat'"),
    ("evaluate.tasks", ["nosuchtask"], "evaluate.tasks: unknown lm-eval task 'nosuchtask'"),
    ("model.dtype", "float7", "model.dtype: unknown dtype 'float7'"),
    ("output.dtype", "float7", "output.dtype: unknown dtype 'float7'"),
    ("select", {"layers": [1, 1]}, "select.layers: layer 1 is given more than once in [1, 1]"),
    ("select", {"layers": "1,1"}, "select.layers: layer 1 is given more than once in [1, 1]"),
    ("select", {"layers": [-1]}, "select.layers: layer index -1 is negative"),
    ("select", {"layers": []}, "select.layers: the layer list is empty: it would remove nothing"),
    ("select", {"metric": "bi", "num_layers": True}, "select.num_layers: expected a number, not true/false"),
    ("select", {"metric": "bi", "num_layers": 1.0}, "select.num_layers: expected an integer"),
    ("select", {"metric": "bi", "num_layers": "1"}, "select.num_layers: expected a number, not a string"),
    ("heal.train.bf16", 1, "heal.train.bf16: expected true or false"),
    ("heal.train.max_steps", False, "heal.train.max_steps: expected a number, not true/false"),
    ("width", {"ratio": 0.2, "min_ratio": 0.5, "max_ratio": 0.1, "schedule": "log-increase"}, "min_ratio 0.5 is above"),
    ("sparsify", {"allocation": "owl", "owl_m": -5}, "sparsify.owl_m: Input should be greater than 0"),
]


def _probe_recipe(root: Path, key: str, value) -> str:
    from layerprune.pipeline.recipe import set_key

    recipe = tiny_recipe(root)
    if key == "heal.teacher":
        recipe["heal"]["loss"] = "kd"
    value = value.replace("{w}", str(root)) if isinstance(value, str) else value
    set_key(recipe, key, value)
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
@pytest.mark.parametrize(("key", "value", "message"), RECIPE_PROBES, ids=[f"{p[0]}={p[1]}" for p in RECIPE_PROBES])
def test_a_bad_recipe_is_refused_before_any_work(workspace, capsys, key, value, message, dry_run) -> None:
    recipe = _probe_recipe(workspace, key, value)
    refused(workspace, ["run", recipe, "--output", "{w}/out", *dry_run], message, capsys)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("evaluate.ppl.x=1", "cannot set evaluate.ppl.x: evaluate.ppl is a list, not a section with keys"),
        ("heal..max_steps=3", "key 'heal..max_steps' has an empty segment (part 2)"),
        (".heal=3", "key '.heal' has an empty segment (part 1)"),
        ("select.metric.x=1", "cannot set select.metric.x: select.metric is a"),
    ],
)
@pytest.mark.parametrize("command", ["run", "study"])
def test_a_set_through_a_value_or_an_empty_segment_is_one_line(workspace, capsys, override, message, command) -> None:
    source = _recipe(workspace) if command == "run" else _study(workspace, {"select.metric": ["bi", "angular"]})
    refused(workspace, [command, source, "--output", "{w}/out", "--set", override], message, capsys)


def test_a_key_given_twice_in_yaml_is_refused(workspace, capsys) -> None:
    path = workspace / "twice.yaml"
    text = yaml.safe_dump(tiny_recipe(workspace))
    path.write_text(text + "select: {layers: [1]}\n")
    refused(workspace, ["run", str(path), "--output", "{w}/out", "--dry-run"], "key 'select' is given twice", capsys)
    nested = text.replace("heal:\n", "heal:\n  schedule: one-shot\n  schedule: 1:1:1\n", 1)
    path.write_text(nested)
    refused(workspace, ["run", str(path), "--output", "{w}/out"], "key 'schedule' is given twice", capsys)


def test_a_layer_beyond_the_model_is_found_after_the_load_before_any_write(tmp_path, capsys) -> None:
    root = tiny_workspace(tmp_path)
    recipe = _recipe(root, select={"layers": [1, 9]})
    message = "select.layers: layer 9 is beyond the model's 4 layers"
    refused(root, ["run", recipe, "--output", "{w}/out"], message, capsys)
    recipe = _recipe(root, select=None, heal=None, width={"ratio": 0.001})
    refused(root, ["run", recipe, "--output", "{w}/out"], "width ratio 0.001 removes nothing", capsys)
    recipe = _recipe(root, select={"metric": "bi", "num_layers": 4})
    refused(root, ["run", recipe, "--output", "{w}/out"], "select.num_layers is 4 but the model has only 4", capsys)


# --- two writers, one output; the advice after an interrupted heal --------------------------

HEAL_CHECKPOINT = ("layerprune.healing.trainer", "HealingTrainer", "_save_checkpoint")


@pytest.mark.slow
def test_a_second_run_into_the_same_output_exits_2_naming_the_first(tmp_path, capsys) -> None:
    root = tiny_workspace(tmp_path)
    recipe = _recipe(root)
    argv = ["run", recipe, "--output", str(root / "out")]
    with stopped_in(argv, ("layerprune.pipeline.stages", "Select", "run")) as first:
        err = refused(root, argv, f"output {root / 'out'} is being written by process {first.pid}", capsys)
        assert "choose another output" in err
        first.send_signal(signal.SIGTERM)
    assert first.output.returncode == -signal.SIGTERM
    assert main([*argv, "--dry-run"]) == 0, "a killed writer's lock does not outlive it"


@pytest.mark.slow
def test_sigterm_during_a_runs_heal_advises_the_same_command(tmp_path) -> None:
    root = tiny_workspace(tmp_path)
    argv = ["run", _recipe(root), "--output", str(root / "out")]
    with stopped_in(argv, HEAL_CHECKPOINT) as process:
        process.send_signal(signal.SIGTERM)
    assert process.output.returncode == 143, process.output.stderr
    assert "run the same command again" in process.output.stderr
    assert "--resume" not in process.output.stderr


# --- studies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ({"grid": {"select.metric": ["bi", "bi"]}}, "grid select.metric lists 'bi' twice"),
        (
            {"grid": {"heal.method": [{"name": "lora"}, {"name": "lora"}]}},
            "grid heal.method lists {'name': 'lora'} twice",
        ),
        ({"gird": {"select.metric": ["bi"]}}, "unknown study key 'gird' — did you mean 'grid'?"),
        ({"grid": {"select.metric": ["bi"]}, "set": ["heal.train.max_steps=2"]}, "set maps key paths to values"),
    ],
)
def test_a_bad_study_is_one_line(workspace, capsys, study, message) -> None:
    path = workspace / "study.yaml"
    path.write_text(yaml.safe_dump({"base": tiny_recipe(workspace), **study}))
    for dry_run in ([], ["--dry-run"]):
        refused(workspace, ["study", str(path), "--output", "{w}/out", *dry_run], message, capsys)


def test_cell_names_are_injective(workspace) -> None:
    base = tiny_recipe(workspace, select={"layers": [1]})
    grid = {"select.layers": ["1,3", "1-3"], "description": ["a_b", "a b"]}
    path = workspace / "study.yaml"
    path.write_text(yaml.safe_dump({"base": base, "grid": grid}, sort_keys=False))
    _, cells = load_study(path)
    names = ["layers-1%2C3_description-a%5Fb", "layers-1%2C3_description-a%20b", "layers-1-3_description-a%5Fb"]
    assert [cell.name for cell in cells][:3] == names
    assert [cell.recipe.select.layers for cell in cells][::2] == [[1, 3], [1, 2, 3]]
    twin = dataclasses.replace(cells[1], values={"select.layers": "other"})
    with pytest.raises(ConfigError, match="would share the directory name 'layers-1%2C3_description-a%20b'"):
        check_names([*cells, twin], "study.yaml")
