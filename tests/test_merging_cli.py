"""``layerprune merge`` end to end on a tiny saved model."""

import pytest

from layerprune.cli import main
from layerprune.provenance import read_record
from layerprune.saving import save_model
from test_merging_models import deep_tiny
from tiny_models import tiny_tokenizer


@pytest.fixture
def tiny_dir(tmp_path):
    save_model(deep_tiny("llama", 8), tiny_tokenizer(), tmp_path / "tiny")
    text = tmp_path / "calib.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return tmp_path / "tiny", text


def test_merge_cli_target_mode_prints_groups_and_records_them(tiny_dir, tmp_path, capsys) -> None:
    model_dir, text = tiny_dir
    argv = ["merge", "--model", str(model_dir), "--num-layers", "2", "--calibration", str(text), "--samples", "4"]
    assert main([*argv, "--seq-len", "16", "--merge-op", "mean", "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "removes exactly 2 layers" in printed and "layers:     8 → 6" in printed
    record = read_record(tmp_path / "out")
    step = record["steps"][-1]
    assert record["num_layers"] == 6 and step["stage"] == "merge" and step["operator"] == "mean"
    assert sum(last - first for first, last in step["merged_source_groups"]) == 2
    assert all(f"[{first}–{last}]" in printed for first, last in step["merged_source_groups"])


def test_merge_cli_rejects_unknown_operator(tiny_dir, tmp_path, capsys) -> None:
    model_dir, _ = tiny_dir
    code = main(["merge", "--model", str(model_dir), "--threshold", "0.5", "--merge-op", "rdcs", "--output", "x"])
    assert code == 2 and "Did you mean 'rdsc'" in capsys.readouterr().err


def test_replace_cli_streamline_saves_a_shallower_model(tiny_dir, tmp_path, capsys) -> None:
    model_dir, text = tiny_dir
    argv = [
        "replace",
        "--model",
        str(model_dir),
        "--num-layers",
        "3",
        "--train-data",
        str(text),
        "--calibration",
        str(text),
    ]
    argv += [
        "--samples",
        "2",
        "--seq-len",
        "16",
        "--train-samples",
        "8",
        "--lr",
        "1e-3",
        "--output",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = read_record(tmp_path / "r")
    step = record["steps"][-1]
    first, last = step["block"]
    assert record["num_layers"] == 5 and last - first == 3 and step["steps"] == 2
    assert f"replaced [{first}–{last}] → {first}" in printed and "layers:     8 → 5" in printed
