"""The recipe schema: every bad value is one line naming its key path, before any model loads."""

from __future__ import annotations

import importlib

import pytest
import yaml

from layerprune.cli import main
from layerprune.config import ConfigError
from layerprune.pipeline.recipe import (
    Recipe,
    RecipeLoader,
    load_recipe,
    parse_layer_list,
    parse_override,
    shipped_names,
    validate_recipe,
)
from pipeline_support import tiny_recipe, write_recipe

run_module = importlib.import_module("layerprune.pipeline.run")
BASE = {"select": {"metric": "bi", "ratio": 0.25}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hael": {}}, "unknown key hael — did you mean heal?"),
        ({"heal": {"train": {"max_step": 3}}}, "unknown key heal.train.max_step — did you mean heal.train.max_steps?"),
        ({"select": {"metric": "bi", "ratio": 0.25, "exclude_frist": 1}}, "did you mean select.exclude_first?"),
        ({"heal": {"train": {"max_steps": "many"}}}, "heal.train.max_steps: Input should be a valid integer"),
        ({"heal": {"train": {"max_steps": 0}}}, "heal.train.max_steps: Input should be greater than or equal to 1"),
        ({"heal": {"train": {"learning_rate": -0.001}}}, "heal.train.learning_rate: Input should be greater than 0"),
        ({"heal": {"train": {"batch_size": 0}}}, "heal.train.batch_size: Input should be greater than or equal to 1"),
        ({"select": {"metric": "bi", "ratio": 1.5}}, "select.ratio: Input should be less than 1"),
        ({"select": {"metric": "bi", "ratio": 0.25, "num_layers": 3}}, "exactly one of num_layers or ratio"),
        ({"select": {"metric": "bi", "layers": [1]}}, "exactly one of metric, layers, merge, replace"),
        ({"select": {"layers": "2-1"}}, "select.layers: layer range '2-1' is descending"),
        ({"select": {"layers": ""}}, "select.layers: cannot read layer list ''"),
        ({"select": {"merge": {"threshold": 1.5}}}, "threshold must be in [-1, 1] for cosine"),
        ({"select": {"merge": {"threshold": 2, "similarity": "cka"}}}, "threshold must be in [0, 1] for cka"),
        ({"select": {"merge": {"threshold": 0.5, "ratio": 0.25}}}, "exactly one of threshold, num_layers or ratio"),
        ({"heal": {"loss": "kd", "teacher": None}}, "heal: loss 'kd' distils from a teacher"),
        ({"heal": {"method": "lorra"}}, "Did you mean 'lora'?"),
        ({"calibration": {"samples": 0}}, "calibration.samples: Input should be greater than or equal to 1"),
        ({"evaluate": {"harness": {"limit": 0}, "ppl": ["wikitext2"]}}, "evaluate.harness.limit"),
        ({"select": {"metric": "bi", "num_layers": 8}, "heal": {"schedule": "1:4:6"}}, "removes 6 layers"),
    ],
)
def test_bad_recipes_name_the_key_path(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_recipe({**BASE, **change})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_layer_lists() -> None:
    assert parse_layer_list("3-5,9") == [3, 4, 5, 9]
    assert validate_recipe({"select": {"layers": "20-22"}}).select.layers == [20, 21, 22]


def test_round_trip_yaml_and_json_with_schema_version() -> None:
    recipe = validate_recipe({**BASE, "heal": {"loss": "kd"}, "evaluate": {"ppl": ["wikitext2"]}})
    assert Recipe.model_validate(yaml.safe_load(recipe.to_yaml())) == recipe
    assert Recipe.model_validate_json(recipe.to_json()) == recipe
    assert recipe.dump()["schema_version"] == 1
    assert recipe.heal.loss.name == "kd" and recipe.heal.method.train_layers == 3  # defaults from MethodConfig


def test_overrides_and_shorthands(tmp_path) -> None:
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path))
    recipe = load_recipe(path, ["heal.loss=kd", "heal.method=lora", "heal.train.max_steps=9", "select.num_layers=2"])
    assert (recipe.heal.loss.name, recipe.heal.method.name, recipe.heal.train.max_steps) == ("kd", "lora", 9)
    assert recipe.heal.method.untie is True  # the shorthand kept the section's other keys
    assert recipe.select.num_layers == 2
    with pytest.raises(ConfigError, match=r"did you mean heal\.train\.max_steps"):
        load_recipe(path, ["heal.train.max_stepz=9"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--set", "hael.loss=kd"], "unknown key hael — did you mean heal?"),
        (["--set", "heal.train.max_steps=abc"], "heal.train.max_steps: Input should be a valid integer"),
        (["--set", "select.ratio=2"], "select.ratio"),
        (["--set", "select.ratio=0.25"], "exactly one of num_layers or ratio"),
        (["--set", "nokey"], "write it as key.path=value"),
    ],
)
def test_cli_schema_errors_exit_2_before_loading(tmp_path, monkeypatch, capsys, overrides, message) -> None:
    loaded = []
    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: loaded.append(a))
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path))
    assert main(["run", str(path), "--output", str(tmp_path / "out"), *overrides]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert loaded == [] and not (tmp_path / "out").exists()


def test_output_checks_before_loading(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path))
    (tmp_path / "tiny").mkdir()  # the recipe's model.spec exists (its weights are never read)
    (tmp_path / "text.txt").write_text("calibration text " * 50)  # and so does its data
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main(["run", str(path), "--output", str(tmp_path / "taken")]) == 2
    assert "is not a layerprune run; pass --overwrite" in capsys.readouterr().err
    assert main(["run", str(path), "--output", str(tmp_path / "afile")]) == 2
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("name", shipped_names("recipes"))
def test_every_shipped_recipe_passes_dry_run(name, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["run", name, "--output", str(tmp_path / name), "--dry-run"]) == 0
    assert "select" in capsys.readouterr().out
    assert not (tmp_path / name).exists()


def test_recipes_lists_every_shipped_file(capsys) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in [*shipped_names("recipes"), *shipped_names("studies")])
    assert {"quickstart", "reassessing-paper", "best-measured", "shortgpt-lora", "slm", "streamline"} <= set(
        shipped_names("recipes")
    )


def test_a_schedule_stays_a_string_in_yaml_and_in_set(tmp_path) -> None:
    """YAML 1.1 reads ``1:4:8`` as the base-60 integer 3848; recipes read it as the schedule it is."""
    assert parse_override("heal.schedule=1:4:8") == ("heal.schedule", "1:4:8")
    assert parse_override("heal.train.max_steps=20") == ("heal.train.max_steps", 20)
    assert yaml.load("schedule: 1:4:8\nratio: 0.25\nhex: 0x10", Loader=RecipeLoader) == {
        "schedule": "1:4:8",
        "ratio": 0.25,
        "hex": 16,
    }
