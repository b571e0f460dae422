"""First-order Taylor importance of whole layers (Kim et al. 2024, "Shortened LLaMA")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import PreTrainedModel

from layerprune.errors import UserError
from layerprune.metrics.base import LayerScores, ScoringContext, progress_batches, register_metric
from layerprune.metrics.nll import predicted_positions, token_nll
from layerprune.models import decoder_layers

TAYLOR_PLUS_EXCLUDE = (4, 2)


def taylor_scores(model: PreTrainedModel, context: ScoringContext) -> list[float]:
    """score_i = Σ_{w ∈ layer i} |w · ∂L/∂w|, L the mean calibration NLL (computed once per context)."""
    if "taylor" in context.cache:
        return context.cache["taylor"]
    if context.layers is not None:
        raise UserError(
            "taylor and taylor+ need gradients through the whole model, so the model in memory; "
            "score them without streaming"
        )
    calibration = context.require_calibration("taylor")
    total = int(predicted_positions(calibration.attention_mask).sum())
    layers = decoder_layers(model)
    with _gradients_for(list(layers.parameters()), model):
        for input_ids, attention_mask in progress_batches(model, context, "taylor"):
            (token_nll(model, input_ids, attention_mask)[0] / total).backward()
        scores = [sum(_saliency(p) for p in layer.parameters() if p.grad is not None) for layer in layers]
    context.cache["taylor"] = scores
    return scores


def _saliency(parameter: torch.nn.Parameter) -> float:
    """Σ |w · ∂L/∂w| over the entries of one parameter tensor, in fp64."""
    return float((parameter.detach().double() * parameter.grad.double()).abs().sum())


@contextlib.contextmanager
def _gradients_for(parameters: list[torch.nn.Parameter], model: PreTrainedModel) -> Iterator[None]:
    """Only ``parameters`` require gradients inside the block; every flag and ``.grad`` is restored after."""
    flags = {p: p.requires_grad for p in model.parameters()}
    wanted = set(parameters)
    try:
        for parameter in flags:
            parameter.requires_grad_(parameter in wanted)
            parameter.grad = None
        yield
    finally:
        for parameter, flag in flags.items():
            parameter.requires_grad_(flag)
            parameter.grad = None


@register_metric("taylor")
def taylor(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """score_i = Σ_{W ∈ layer i} Σ |W ⊙ Σ_batches ∂L/∂W|, L the mean next-token NLL on the calibration set.

    Kim et al. 2024, "Shortened LLaMA: Depth Pruning for LLMs": a layer whose weights
    barely move the loss to first order goes first. Gradients accumulate over the batches
    (as one gradient of the mean NLL over all calibration tokens), so the score does not
    depend on the batch size.
    """
    return LayerScores("taylor", taylor_scores(model, context))


@register_metric("taylor+")
def taylor_plus(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """score_i = taylor score_i, with layers 0–3 and the last 2 never candidates (Kim et al. 2024, Taylor+).

    The scores equal ``taylor``'s; the exclusion travels with them, so every removal order
    skips those layers (and combines with ``--exclude-first/--exclude-last`` by the larger).
    """
    first, last = TAYLOR_PLUS_EXCLUDE
    return LayerScores("taylor+", taylor_scores(model, context), exclude_first=first, exclude_last=last)
