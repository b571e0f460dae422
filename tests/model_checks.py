"""Checks every model layerprune produces must pass: reload equality and KV-cache consistency."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from layerprune.saving import save_model
from tiny_models import token_batch


@torch.no_grad()
def assert_reloads_equal(model: PreTrainedModel, directory: Path) -> PreTrainedModel:
    """save_model → AutoModelForCausalLM.from_pretrained gives the same logits (atol 1e-5)."""
    save_model(model, None, directory)
    reloaded = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    ids = token_batch(2, 10, seed=5)
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=1e-5, rtol=0)
    return reloaded


@torch.no_grad()
def assert_cache_consistent(model: PreTrainedModel) -> None:
    """Incremental decoding with the KV cache = full recompute; greedy generate with cache = without."""
    ids = token_batch(1, 8, seed=6)
    full = model(ids, use_cache=False).logits
    prefix = model(ids[:, :5], use_cache=True)
    cache, steps = prefix.cache, [prefix.logits]
    for position in range(5, 8):
        step = model(ids[:, position : position + 1], cache=cache, use_cache=True)
        cache = step.cache
        steps.append(step.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    options = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with_cache = model.generate(ids, use_cache=True, **options)
    without = model.generate(ids, use_cache=False, **options)
    assert torch.equal(with_cache, without)
