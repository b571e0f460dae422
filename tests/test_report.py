"""Reports from constructed scores and results files."""

from __future__ import annotations

import json

import matplotlib.image
import pytest

from layerprune.cli import main
from layerprune.evaluation.results import new_results, write_results
from layerprune.report import write_report
from tiny_models import tiny_model

SCORES = {
    "format": 1,
    "model": "tiny",
    "num_layers": 3,
    "calibration": {"source": "default", "samples": 2, "seq_len": 8, "seed": 0},
    "settings": {},
    "metrics": {
        "bi": {"scores": [0.5, 0.1, 0.3], "removal_order": [1, 2, 0]},
        "angular": {
            "scores": [0.2, 0.1, 0.4],
            "removal_order": [1, 0, 2],
            "blocks": {"1": [0.2, 0.1, 0.4], "2": [0.3, 0.35]},
        },
    },
    "similarity": {
        "cosine": [[1.0, 0.9, 0.8, 0.7], [0.9, 1.0, 0.95, 0.8], [0.8, 0.95, 1.0, 0.9], [0.7, 0.8, 0.9, 1.0]]
    },
}


def _results(tmp_path, name, ppl):
    results = new_results(tiny_model("llama"), name, settings={}, seed=0)
    results["perplexity"]["wikitext2"] = {"ppl": ppl}
    write_results(tmp_path / f"{name}.json", results)
    return tmp_path / f"{name}.json"


def test_report_lists_removal_orders_and_draws_figures(tmp_path):
    (tmp_path / "scores.json").write_text(json.dumps(SCORES))
    out = write_report(tmp_path / "report", tmp_path / "scores.json", remove=2)
    text = (out / "report.md").read_text()
    assert "| bi | 1, 2 |" in text and "| angular | 0, 1 |" in text
    for figure in ("similarity-cosine.png", "metrics.png", "angular.png"):
        assert matplotlib.image.imread(out / figure).ndim == 3


def test_report_puts_results_side_by_side_with_deltas(tmp_path):
    paths = [_results(tmp_path, "dense", 20.0), _results(tmp_path, "pruned", 26.5)]
    text = (write_report(tmp_path / "report", results_paths=paths) / "report.md").read_text()
    assert "| ppl wikitext2 | 20 | 26.5 (+6.5) |" in text


def test_cli_report_without_inputs_is_a_user_error(tmp_path, capsys):
    assert main(["report", "--output", str(tmp_path / "r")]) == 2
    assert "needs --scores" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bad_scores_file_is_a_user_error(tmp_path):
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(ValueError, match="not a layerprune scores file"):
        write_report(tmp_path / "r", tmp_path / "s.json")
