"""Summed next-token negative log-likelihood over the non-pad tokens of a batch."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from layerprune.models.head import next_token_nll


def token_nll(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """(Σ −log p(x_t+1 | x_≤t), number of predicted tokens); a target counts if it and its context token are real.

    The sum is fp32 and keeps the autograd graph, so it serves both perplexity and gradients.
    The head runs only on the predicted positions, a chunk at a time (:mod:`layerprune.models.head`).
    """
    valid = predicted_positions(attention_mask)
    targets = torch.where(valid, input_ids[:, 1:], -1)
    call = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    return next_token_nll(model, call, targets)


def predicted_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[batch, seq − 1]`` bool: target t+1 is scored when both it and token t are real."""
    return attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
