"""The LM head fused with next-token NLL, a chunk of positions at a time: no ``[tokens, vocab]`` logits.

A forward pass inside :func:`head_skipped` stops at the LM head: the head's input (the final,
normed hidden states) is captured and the head runs on zero positions. :func:`head_nll` then
computes, for chosen rows only,

    NLL = Σ_n logsumexp(z_n) − z_n[y_n],    z_n = f(head(h_n)) in fp32,

``f`` the family's logit post-processing (:func:`logit_transform`), :func:`chunk_rows` rows
at a time. A chunk's logits are freed before the next one; with gradients, each chunk is
recomputed in the backward pass (activation checkpointing), so backward holds one chunk too.
Positions nobody reads (pads, the last position) never reach the head. On Qwen2.5-0.5B
(151,936 tokens) a batch of 16 × 256 healing tokens would otherwise hold 2.5 GB of fp32 logits
(and as much again for their gradient); chunked, 0.27 GB.
Families read off the model (not in the architecture table) keep the plain path, since
their post-processing is unknown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from layerprune.models.architectures import decoder_config, get_architecture

# Logits held at once: 2^26 fp32 values (256 MiB), 441 positions of Qwen2.5's 151,936-token vocabulary. Each
# chunk reads the whole head weight: 110-position chunks (2^24) made a 512-token window 17 % slower than full
# logits (BENCHMARKS.md, "A real model"); the matmul needs a few hundred rows to run at full speed.
CHUNK_LOGITS = 1 << 26
Transform = Callable[[torch.Tensor], torch.Tensor]


def logits_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ_n logsumexp(z_n) − z_n[y_n] in fp32 over the rows of ``logits`` ``[N, V]`` and ``targets`` ``[N]``.

    On a view, with no ``[N, V]`` copy, and closer to fp64 on CPU than ``cross_entropy``
    (relative 4e-8 against 5e-7 on a 50k vocabulary; see tests/test_scores.py).
    """
    logits = logits.float()
    return (torch.logsumexp(logits, dim=-1) - logits.gather(-1, targets[:, None]).squeeze(-1)).sum()


def logit_transform(model: PreTrainedModel) -> Transform:
    """What the model's forward does to ``lm_head``'s output (transformers 5.24's modeling code).

    Gemma 2/3: ``cap · tanh(z / cap)`` with ``final_logit_softcapping``; Cohere: ``z · logit_scale``;
    Granite: ``z / logits_scaling``; every other registered family: ``z``.
    """
    config = decoder_config(model)
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    divisor = getattr(config, "logits_scaling", None)

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            logits = logits * scale
        if divisor is not None:
            logits = logits / divisor
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform


def chunked_head_supported(model: nn.Module) -> bool:
    """Whether ``model`` (or the model under a peft wrapper) is a causal LM of a family in the architecture table.

    Only then is the head's post-processing known.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return isinstance(base, PreTrainedModel) and not get_architecture(base).inferred


def chunk_rows(model: PreTrainedModel) -> int:
    """Positions per head chunk: :data:`CHUNK_LOGITS` over the vocabulary size, at least one."""
    return max(1, CHUNK_LOGITS // model.get_output_embeddings().out_features)


@contextlib.contextmanager
def head_skipped(model: PreTrainedModel) -> Iterator[list[torch.Tensor]]:
    """Inside, the forward captures the LM head's input (appended to the yielded list) and computes no logits."""
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, args: tuple) -> tuple:
        captured.append(args[0])
        return (args[0][..., :0, :], *args[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(capture)
    try:
        yield captured
    finally:
        handle.remove()


def head_nll(model: PreTrainedModel, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ −log p(y_n | h_n) over the rows of ``hidden`` ``[N, H]`` (head inputs) and ``targets`` ``[N]``, chunked.

    fp32 and differentiable (with respect to ``hidden`` and the head's parameters).
    """
    head, transform, step = model.get_output_embeddings(), logit_transform(model), chunk_rows(model)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], step):
        rows, wanted = hidden[start : start + step], targets[start : start + step]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_nll, head, transform, rows, wanted, use_reentrant=False)
        else:
            total = total + _chunk_nll(head, transform, rows, wanted)
    return total


def _chunk_nll(head: nn.Module, transform: Transform, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits_nll(transform(head(rows)), targets)


def next_token_nll(model: PreTrainedModel, model_kwargs: dict, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(Σ −log p(x_t+1 | x_≤t), count) over positions t with ``targets[:, t] ≥ 0``; ``targets`` is ``[B, T − 1]``.

    ``model_kwargs`` is the forward call (``input_ids``, ``attention_mask``, ...); only those
    positions' logits are computed (chunked), unless the family is not in the table.
    """
    keep = targets >= 0
    if not chunked_head_supported(model):
        logits = model(**model_kwargs).logits[:, :-1]
        return logits_nll(logits[keep], targets[keep]), int(keep.sum())
    with head_skipped(model) as captured:
        model(**model_kwargs)
    return head_nll(model, captured[-1][:, :-1][keep], targets[keep]), int(keep.sum())
