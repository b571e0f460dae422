"""Constructed models and calibration sets for the metric tests."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from layerprune.calibration import CalibrationConfig, CalibrationSet
from layerprune.models import decoder_layers
from tiny_models import tiny_model, token_batch

IDENTITY_LAYER = 2


def calibration_of(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> CalibrationSet:
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    return CalibrationSet(input_ids, mask, CalibrationConfig(source="test", samples=len(input_ids)))


def random_calibration(samples: int = 4, length: int = 16, seed: int = 1) -> CalibrationSet:
    return calibration_of(token_batch(samples, length, seed=seed))


def identity_layer_model() -> PreTrainedModel:
    """Tiny Llama whose layer 2 is an exact identity (o_proj and down_proj zeroed), with sharp logits."""
    model = tiny_model("llama", seed=3)
    layer = decoder_layers(model)[IDENTITY_LAYER]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.mul_(20)
    return model


@torch.no_grad()
def greedy_calibration(model: PreTrainedModel, samples: int = 4, length: int = 20) -> CalibrationSet:
    """Text the model itself predicts greedily: the intact model fits it best, so any real change hurts."""
    ids = token_batch(samples, 3, seed=5)
    while ids.shape[1] < length:
        next_token = model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_token], dim=1)
    return calibration_of(ids)
