"""``output: {format: gguf}`` in a recipe: the selection written as model.gguf, reported with sizes and types."""

from __future__ import annotations

import json

import pytest
from gguf import GGUFReader

from gguf_files import write_tiny_gguf
from layerprune.config import ConfigError
from layerprune.pipeline.recipe import load_recipe, validate_recipe
from layerprune.pipeline.run import run


def test_a_recipe_with_gguf_output_writes_the_pruned_gguf_and_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path / "cache"))
    source = write_tiny_gguf(tmp_path / "llama.gguf", "llama", 6)
    recipe = validate_recipe(
        {"model": {"spec": str(source)}, "select": {"layers": [2, 3]}, "output": {"format": "gguf"}}
    )
    result = run(recipe, tmp_path / "run")
    pruned = tmp_path / "run" / "model.gguf"
    assert pruned.is_symlink() and not (tmp_path / "run" / "model").exists()
    assert GGUFReader(pruned).fields["llama.block_count"].contents() == 4
    assert result.results["stages"]["select"]["gguf"]["file_bytes"][0] == source.stat().st_size
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "## GGUF" in report and f"{source.stat().st_size:,} →" in report
    assert "| 0 | F32, Q4_K, Q5_0, Q6_K |" in report


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"heal": {"loss": "ce"}}, "heal rewrites weights"),
        ({"width": {"ratio": 0.2}}, "width rewrites weights"),
        ({"model": {"spec": "some/dir"}}, "model.spec must be default or a .gguf"),
    ],
)
def test_gguf_output_refuses_what_cannot_keep_the_quantization(extra, message):
    data = {"select": {"layers": [1]}, "output": {"format": "gguf"}, **extra}
    with pytest.raises(ConfigError, match=message):
        validate_recipe(data)


def test_the_shipped_gguf_quickstart_recipe_validates():
    recipe = load_recipe("gguf-quickstart")
    assert recipe.output.format == "gguf" and recipe.model.spec == "default"


def test_select_whole_periods_in_a_recipe_removes_runs_the_metric_ranks(tmp_path, monkeypatch):
    """gemma3 (every 6th layer global in llama.cpp): the metric's 6 layers become the best-ranked run of 6."""
    from layerprune.gguf.patterns import whole_periods
    from layerprune.metrics import LayerScores

    monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path / "cache"))
    source = write_tiny_gguf(tmp_path / "gemma3.gguf", "gemma3", 12)
    select = {"metric": "magnitude-l2", "num_layers": 6, "whole_periods": True}  # weights only: no text
    recipe = validate_recipe({"model": {"spec": str(source)}, "select": select, "output": {"format": "gguf"}})
    result = run(recipe, tmp_path / "run")
    removed = result.results["stages"]["select"]["removed"]
    step = GGUFReader(tmp_path / "run" / "model.gguf")
    assert step.fields["gemma3.block_count"].contents() == 6
    assert step.fields["layerprune.removed_layers"].contents() == removed
    assert removed == list(range(removed[0], removed[0] + 6))
    recorded = json.loads(bytes(step.fields["layerprune.steps"].parts[-1]))[-1]
    assert recorded["whole_periods"] == 6 and len(recorded["metric_choice"]) == 6
    scores = json.loads((tmp_path / "run" / "stages" / "score" / "scores.json").read_text())["metrics"]["magnitude-l2"]
    assert removed == whole_periods(LayerScores("magnitude-l2", scores["scores"]).ranking(0, 0), 6, 6, 12)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"select": {"layers": [1], "whole_periods": True}, "output": {"format": "gguf"}}, "goes with metric"),
        ({"select": {"metric": "bi", "num_layers": 6, "whole_periods": True}}, "output.format gguf only"),
    ],
)
def test_whole_periods_needs_a_metric_and_a_gguf_output(data, message):
    with pytest.raises(ConfigError, match=message):
        validate_recipe(data)
