"""Scores: JSON round trip, removal orders, block selection, exclusions, ratio rounding, registry docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from layerprune.api import score
from layerprune.errors import UserError
from layerprune.metrics import METRICS, LayerScores, Scores, layers_for_ratio, resolve_metric_names
from metric_fixtures import random_calibration
from tiny_models import tiny_model

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def test_json_round_trip(tmp_path):
    model = tiny_model("llama", num_hidden_layers=8)
    scores = score(model, metrics=["bi", "angular", "random", "taylor+"], calib=random_calibration(), progress=False)
    path = tmp_path / "scores.json"
    scores.save(path)
    loaded = Scores.load(path)
    assert loaded == scores
    assert loaded.angular_table[3] == scores.angular_table[3] and len(loaded.angular_table[3]) == 6
    assert loaded.removal_order("taylor+", 2) == scores.removal_order("taylor+", 2)
    assert set(loaded.removal_order("taylor+", 2)) == {4, 5}
    assert loaded.removal_order("angular", 3) == scores.get("angular").best_block(3)


def test_block_metric_removes_best_contiguous_block():
    blocks = {1: [0.5, 0.1, 0.2, 0.9], 2: [0.3, 0.25, 0.2], 3: [0.6, 0.7]}
    angular = LayerScores("angular", blocks[1], blocks=blocks)
    assert angular.removal_order(1) == [1]
    assert angular.removal_order(2) == [2, 3]
    assert angular.removal_order(2, exclude_last=1) == [1, 2]
    assert angular.removal_order(3, exclude_first=1) == [1, 2, 3]
    with pytest.raises(UserError, match="cannot remove 3 layers: 2 are candidates"):
        angular.removal_order(3, exclude_first=1, exclude_last=1)


def test_exclusion_options_keep_layers_out():
    scores = LayerScores("bi", [0.1, 0.2, 0.3, 0.05, 0.4, 0.01])
    assert scores.removal_order(2) == [3, 5]
    assert scores.removal_order(2, exclude_first=1, exclude_last=1) == [1, 3]
    assert scores.ranking(exclude_first=2, exclude_last=2) == [3, 2]
    with pytest.raises(UserError, match="cannot remove 3 layers: 2 are candidates"):
        scores.removal_order(3, exclude_first=2, exclude_last=2)


@pytest.mark.parametrize(
    ("ratio", "layers", "expected"), [(0.25, 30, 8), (0.15, 30, 5), (0.1, 30, 3), (0.2, 32, 6), (0.5, 4, 2)]
)
def test_ratio_rounds_half_up(ratio, layers, expected):
    assert layers_for_ratio(ratio, layers) == expected


@pytest.mark.parametrize(("ratio", "layers"), [(0.0, 30), (1.0, 30), (0.01, 30), (0.99, 30)])
def test_ratio_out_of_range_is_a_user_error(ratio, layers):
    with pytest.raises(UserError, match="--ratio"):
        layers_for_ratio(ratio, layers)


def test_metric_names_resolve_with_suggestions():
    assert resolve_metric_names("all") == METRICS.names()
    assert resolve_metric_names("bi, angular,bi") == ["bi", "angular"]
    with pytest.raises(UserError, match="Did you mean 'angular'"):
        resolve_metric_names("angualr")
    with pytest.raises(UserError, match="unknown scoring settings"):
        score(tiny_model("llama"), metrics=["random"], batchsize=3)


def test_every_registered_metric_is_documented():
    documented = set(re.findall(r"^\| `([a-z0-9+\-]+)` \|", DOCS.read_text(), flags=re.MULTILINE))
    assert documented == set(METRICS.names())
    for name, metric in METRICS.items():
        assert "=" in metric.__doc__, f"{name}: the docstring should state the formula"
