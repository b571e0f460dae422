"""``layerprune width`` and ``layerprune sparsify`` on a tiny model: outputs, records, one-line errors."""

from __future__ import annotations

import pytest

from layerprune.cli import main
from layerprune.provenance import read_record
from tiny_models import tiny_model_dir

CALIBRATION = ["--samples", "4", "--seq-len", "32"]


@pytest.fixture
def model_dir(tmp_path):
    tiny_model_dir(tmp_path / "dense", family="llama")
    return tmp_path / "dense"


def test_width_prints_each_layer_and_records_widths(model_dir, tmp_path, capsys):
    out = tmp_path / "w"
    args = ["width", "--model", str(model_dir), "--ratio", "0.3", "--schedule", "log-increase", *CALIBRATION]
    assert main([*args, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layer   3: ratio" in printed and "per-layer widths" in printed and "parameters:" in printed
    assert (out / "modeling_layerprune_width.py").is_file()
    step = read_record(out)["steps"][-1]
    assert step["method"] == "slimgpt" and step["schedule"] == "log-increase" and len(step["widths"]) == 4


def test_sparsify_prints_each_layer_and_records_sparsities(model_dir, tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sparsify", "--model", str(model_dir), "--sparsity", "0.5", "--allocation", "owl", *CALIBRATION]
    assert main([*args, "--output", str(out)]) == 0
    assert "layer   0: sparsity" in capsys.readouterr().out
    step = read_record(out)["steps"][-1]
    assert step["allocation"] == "owl" and len(step["sparsities"]) == 4


@pytest.mark.parametrize(
    "args",
    [
        ["width", "--ratio", "1.5"],
        ["width", "--ratio", "0.9"],
        ["sparsify", "--sparsity", "0"],
        ["sparsify", "--sparsity", "0.5", "--pattern", "2:4", "--allocation", "owl"],
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(model_dir, tmp_path, capsys, args):
    out = tmp_path / "out"
    assert main([args[0], "--model", str(model_dir), *args[1:], *CALIBRATION, "--output", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("layerprune: error:") and "\n" not in error
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["dense"]


def test_unlocatable_family_exits_2(tmp_path, capsys):
    tiny_model_dir(tmp_path / "gpt2", family="gpt2")
    out = tmp_path / "out"
    assert main(["width", "--model", str(tmp_path / "gpt2"), "--ratio", "0.2", "--output", str(out)]) == 2
    assert "cannot locate" in capsys.readouterr().err and not out.exists()


def test_two_four_on_an_indivisible_dimension_exits_2(tmp_path, capsys):
    tiny_model_dir(tmp_path / "odd", family="llama", intermediate_size=66)
    out = tmp_path / "out"
    args = ["sparsify", "--model", str(tmp_path / "odd"), "--sparsity", "0.5", "--pattern", "2:4"]
    assert main([*args, "--output", str(out)]) == 2
    assert "divisible by 4" in capsys.readouterr().err and not out.exists()


def test_every_registered_width_name_is_documented():
    from pathlib import Path

    from layerprune.width import ALLOCATIONS, SPARSE_PRUNERS, WIDTH_METHODS

    text = (Path(__file__).parents[1] / "docs" / "width.md").read_text()
    for registry in (WIDTH_METHODS, SPARSE_PRUNERS, ALLOCATIONS):
        for name in registry.names():
            assert f"| `{name}` |" in text, name
