"""``--streaming`` on ``score`` and ``prune``: same results as in memory, the mode printed, bad inputs exit 2."""

from __future__ import annotations

import json

import pytest
import torch

from layerprune.cli import main
from layerprune.metrics import Scores
from layerprune.streaming import mode
from streaming_checks import assert_same_saved_model
from tiny_models import tiny_model_dir

TEXT = " ".join(f"word{i % 37} and then some more text number {i}." for i in range(60))


@pytest.fixture
def work(tmp_path):
    tiny_model_dir(tmp_path / "model", "llama", num_hidden_layers=6)
    (tmp_path / "calib.txt").write_text(TEXT)
    return tmp_path


def _calibration(work) -> list[str]:
    return ["--calibration", str(work / "calib.txt"), "--samples", "4", "--seq-len", "16"]


def _printed(capsys) -> str:
    """Standard output with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


def test_streamed_score_equals_in_memory_and_says_why(work, capsys) -> None:
    argv = ["score", "--model", str(work / "model"), "--metrics", "bi,angular,ppl", *_calibration(work)]
    assert main([*argv, "--no-streaming", "--output", str(work / "memory.json")]) == 0
    assert "mode: in memory (--no-streaming)" in _printed(capsys)
    assert main([*argv, "--streaming", "--device", "cpu", "--output", str(work / "streamed.json")]) == 0
    assert "mode: streamed (--streaming)" in _printed(capsys)
    in_memory, streamed = Scores.load(work / "memory.json"), Scores.load(work / "streamed.json")
    for name in ("bi", "angular", "ppl"):
        assert streamed.get(name).scores == pytest.approx(in_memory.get(name).scores, rel=1e-5), name


def test_automatic_mode_streams_a_checkpoint_larger_than_the_memory(work, capsys, monkeypatch) -> None:
    argv = ["prune", "--model", str(work / "model"), "--layers", "1,4", "--output"]
    assert main([*argv, str(work / "memory")]) == 0
    assert "mode: in memory (the model (0.00 GiB) fits in the available memory" in _printed(capsys)
    monkeypatch.setattr(mode, "available_memory", lambda: 1000)
    assert main([*argv, str(work / "streamed")]) == 0
    assert "is larger than the available memory (0.00 GiB))" in _printed(capsys)
    assert_same_saved_model(work / "streamed", work / "memory")


def test_streamed_prune_by_metric_equals_in_memory(work) -> None:
    argv = ["prune", "--model", str(work / "model"), "--metric", "ppl", "--num-layers", "2", *_calibration(work)]
    assert main([*argv, "--no-streaming", "--output", str(work / "memory")]) == 0
    assert main([*argv, "--streaming", "--output", str(work / "streamed")]) == 0
    memory, streamed = (json.loads((work / d / "layerprune.json").read_text()) for d in ("memory", "streamed"))
    assert streamed["layer_map"] == memory["layer_map"]
    assert streamed["steps"][-1]["scores"] == pytest.approx(memory["steps"][-1]["scores"], rel=1e-5)


def test_streaming_bad_inputs_exit_2_with_one_line(work, capsys, monkeypatch) -> None:
    bin_model = work / "bin"
    bin_model.mkdir()
    (bin_model / "config.json").write_text((work / "model" / "config.json").read_text())
    torch.save({}, bin_model / "pytorch_model.bin")
    argv = ["prune", "--streaming", "--layers", "1", "--output", str(work / "out"), "--model"]
    assert main([*argv, str(bin_model)]) == 2
    assert "holds no safetensors weights" in capsys.readouterr().err
    monkeypatch.setattr("layerprune.streaming.surgery.free_bytes", lambda directory: 10)
    assert main([*argv, str(work / "model")]) == 2
    error = capsys.readouterr().err
    assert "not enough disk for" in error and len(error.strip().splitlines()) == 1
    assert not (work / "out").exists()


def test_streamed_merge_of_fixed_groups_equals_in_memory(work, capsys) -> None:
    argv = ["merge", "--model", str(work / "model"), "--groups", "0-1,3-5", "--merge-op", "rdsc", "--output"]
    assert main([*argv, str(work / "memory")]) == 0
    assert main([*argv, str(work / "streamed"), "--streaming"]) == 0
    assert_same_saved_model(work / "streamed", work / "memory")
    assert main(["merge", "--model", str(work / "model"), "--streaming", "--ratio", "0.5", "--output", "x"]) == 2
    assert "streamed merging needs fixed --groups" in capsys.readouterr().err
