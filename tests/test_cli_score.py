"""``layerprune score`` and ``layerprune prune --metric/--ratio/--scores`` end to end on a saved tiny model."""

from __future__ import annotations

import pytest

from layerprune.cli import main
from layerprune.metrics import METRICS, Scores
from layerprune.provenance import read_record
from layerprune.saving import save_model
from tiny_models import tiny_model, tiny_tokenizer

TEXT = " ".join(f"word{i % 37} and then some more text number {i}." for i in range(60))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    save_model(tiny_model("llama", num_hidden_layers=6), tiny_tokenizer(), root / "model")
    (root / "calib.txt").write_text(TEXT)
    return root


def calibration_flags(root) -> list[str]:
    return ["--calibration", str(root / "calib.txt"), "--samples", "4", "--seq-len", "16"]


def test_score_writes_json_and_prune_reuses_it(workspace, capsys):
    out = workspace / "scores.json"
    argv = ["score", "--model", str(workspace / "model"), "--metrics", "bi,angular,magnitude-l1", "--output", str(out)]
    assert main(argv + calibration_flags(workspace)) == 0
    printed = capsys.readouterr().out
    assert "angular best block of 2" in printed and "magnitude-l1" in printed
    scores = Scores.load(out)
    assert list(scores.metrics) == ["bi", "angular", "magnitude-l1"]
    assert scores.calibration.samples == 4 and scores.calibration.seq_len == 16
    pruned = workspace / "pruned-angular"
    argv = ["prune", "--model", str(workspace / "model"), "--metric", "angular", "--ratio", "0.34"]
    assert main([*argv, "--scores", str(out), "--output", str(pruned)]) == 0
    record = read_record(pruned)
    step = record["steps"][-1]
    expected = scores.get("angular").best_block(2)
    assert record["removed_layers"] == expected and record["num_layers"] == 4
    assert step["method"] == "angular" and step["k"] == 2 and step["scores_file"] == str(out)
    assert step["scores"] == scores.get("angular").scores


def test_prune_scores_on_the_fly_with_exclusion(workspace):
    out = workspace / "pruned-bi"
    argv = ["prune", "--model", str(workspace / "model"), "--metric", "bi", "--num-layers", "2", "--exclude-last", "2"]
    assert main([*argv, *calibration_flags(workspace), "--output", str(out)]) == 0
    step = read_record(out)["steps"][-1]
    assert step["calibration"] == {"source": str(workspace / "calib.txt"), "samples": 4, "seq_len": 16, "seed": 0}
    bi = step["scores"]
    assert step["removed_source_layers"] == sorted(sorted(range(4), key=lambda i: (bi[i], -i))[:2])


def test_mismatched_scores_file_is_a_user_error(workspace, tmp_path, capsys):
    Scores("other", 5, {}).save(tmp_path / "five.json")
    argv = ["prune", "--model", str(workspace / "model"), "--metric", "bi", "--num-layers", "1"]
    assert main([*argv, "--scores", str(tmp_path / "five.json"), "--output", str(tmp_path / "x")]) == 2
    assert "scores 5 layers but the model has 6" in capsys.readouterr().err


@pytest.mark.slow
def test_score_all_metrics_on_the_default_model_offline(tmp_path):
    out = tmp_path / "scores.json"
    argv = ["score", "--model", "default", "--metrics", "all", "--samples", "2", "--seq-len", "16", "--sleb-steps", "1"]
    assert main([*argv, "--output", str(out)]) == 0
    scores = Scores.load(out)
    assert set(scores.metrics) == set(METRICS.names()) and scores.num_layers == 30
    assert scores.calibration.source == "default"
    assert len(scores.similarity["cka"]) == 31 and len(scores.angular_table) == 29
