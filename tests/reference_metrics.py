"""Naive reference implementations: rebuild the model for every candidate removal (the anchors' way).

The cached ``ppl``/``sleb`` must equal these. They use a deep copy, ``remove_layers`` and the
model's own loss, so they share no code with the cached path except the model.
"""

from __future__ import annotations

import copy
import math

import torch
from transformers import PreTrainedModel

from layerprune.models import num_layers
from layerprune.surgery import remove_layers


@torch.no_grad()
def naive_mean_nll(model: PreTrainedModel, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean next-token NLL over the non-pad tokens, from the model's own loss."""
    total, count = 0.0, 0
    for input_ids, attention_mask in batches:
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False).loss
        tokens = int((labels[:, 1:] != -100).sum())
        total, count = total + float(loss) * tokens, count + tokens
    return total / count


def naive_removal_nll(model: PreTrainedModel, batches, removed: list[int]) -> float:
    pruned = remove_layers(copy.deepcopy(model), removed)
    return naive_mean_nll(pruned, batches)


def naive_ppl(model: PreTrainedModel, batches) -> list[float]:
    return [math.exp(naive_removal_nll(model, batches, [i])) for i in range(num_layers(model))]


def naive_sleb_order(model: PreTrainedModel, batches, steps: int) -> list[int]:
    removed: list[int] = []
    for _ in range(steps):
        candidates = [i for i in range(num_layers(model)) if i not in removed]
        table = {j: naive_removal_nll(model, batches, [*removed, j]) for j in candidates}
        removed.append(min(table, key=lambda j: (table[j], j)))
    return removed
