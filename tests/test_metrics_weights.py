"""Magnitude against hand sums; Taylor against a direct autograd computation."""

from __future__ import annotations

import pytest
import torch

from layerprune.metrics import score
from layerprune.models import decoder_layers
from metric_fixtures import random_calibration
from tiny_models import tiny_model

# tiny Llama layer: q 32·32 + k 32·16 + v 32·16 + o 32·32 + gate/up/down 3·32·64 + two norms 2·32
TINY_LLAMA_LAYER_ENTRIES = 1024 + 512 + 512 + 1024 + 3 * 2048 + 64


def test_magnitude_equals_hand_sums():
    model = tiny_model("llama")
    constants = [-0.5, 0.25, 2.0, -1.0]
    with torch.no_grad():
        for layer, value in zip(decoder_layers(model), constants, strict=True):
            for parameter in layer.parameters():
                parameter.fill_(value)
    scores = score(model, metrics=["magnitude-l1", "magnitude-l2"], calib="unused", progress=False)
    assert scores.calibration is None
    assert scores.get("magnitude-l1").scores == pytest.approx([abs(c) * TINY_LLAMA_LAYER_ENTRIES for c in constants])
    assert scores.get("magnitude-l2").scores == pytest.approx([c * c * TINY_LLAMA_LAYER_ENTRIES for c in constants])
    assert scores.removal_order("magnitude-l2", 2) == [0, 1]


def test_taylor_equals_direct_autograd_and_leaves_no_gradients():
    model = tiny_model("llama")
    calibration = random_calibration(samples=4)
    scores = score(model, metrics=["taylor", "taylor+"], calib=calibration, batch_size=1, progress=False)
    ids = calibration.input_ids
    loss = model(input_ids=ids, labels=ids).loss  # the mean NLL over all calibration tokens at once
    expected = []
    for layer in decoder_layers(model):
        parameters = list(layer.parameters())
        gradients = torch.autograd.grad(loss, parameters, retain_graph=True)
        expected.append(sum(float((p.detach() * g).abs().sum()) for p, g in zip(parameters, gradients, strict=True)))
    assert scores.get("taylor").scores == pytest.approx(expected, rel=1e-4)
    assert scores.get("taylor+").scores == scores.get("taylor").scores
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_taylor_plus_excludes_first_four_and_last_two():
    model = tiny_model("llama", num_hidden_layers=8)
    scores = score(model, metrics=["taylor+"], calib=random_calibration(), progress=False)
    taylor_plus = scores.get("taylor+")
    assert taylor_plus.ranking() in ([4, 5], [5, 4])
    assert taylor_plus.removal_order(1, exclude_first=5) == [5]
    with pytest.raises(ValueError, match="cannot remove 3 layers"):
        taylor_plus.removal_order(3)
