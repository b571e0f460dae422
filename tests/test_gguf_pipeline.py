"""``output: {format: gguf}`` in a recipe: the selection written as model.gguf, reported with sizes and types."""

from __future__ import annotations

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
