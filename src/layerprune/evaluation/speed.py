"""Size, analytical FLOPs, measured latency/throughput and peak memory of a model.

Timings follow the usual protocol: ``warmup`` untimed runs, then the median of
``repeats`` timed runs, on random token ids of fixed shape (batch size and lengths are
recorded). Prefill latency is one forward pass over ``batch × prompt_len`` tokens; decode
throughput is ``batch × decode_tokens`` tokens generated one at a time with the KV cache
after that prefill (greedy, no sampling), divided by the time of the decode loop alone.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from layerprune.config import strict_config
from layerprune.models import decoder_config, decoder_layers, get_architecture, get_submodule


@strict_config
class SpeedOptions:
    """Shapes and repetitions of the timing runs."""

    batch_size: Annotated[int, Field(ge=1)] = 1
    prompt_len: Annotated[int, Field(ge=1)] = 128
    decode_tokens: Annotated[int, Field(ge=1)] = 32
    warmup: Annotated[int, Field(ge=0)] = 1
    repeats: Annotated[int, Field(ge=1)] = 5
    seed: int = 0


def matmul_parameters(module: nn.Module) -> int:
    """Weights of every ``nn.Linear`` / GPT-2 ``Conv1D`` in ``module`` (each is one multiply-add per token)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear | Conv1D))


def attention_width(model: PreTrainedModel) -> int:
    """``num_attention_heads × head_dim``: the width of the query/key/value vectors the scores use."""
    config = decoder_config(model)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_attention_heads * head_dim


def flops_per_token(model: PreTrainedModel, context: int) -> int:
    """Forward FLOPs per token, averaged over a causal sequence of ``context`` tokens.

        FLOPs/token = 2 · (W_layers + W_head) + 2 · L · (H · d_h) · (context + 1)

    with ``W_layers`` the weights of all matrix multiplies in the decoder layers, ``W_head``
    the LM head (the embedding lookup is free), 2 FLOPs per multiply-add (Kaplan et al.
    2020, "Scaling Laws for Neural Language Models", Table 1). The attention term counts
    QKᵀ and A·V: 2 · 2 · H·d_h · t FLOPs per layer at position t, averaged over
    t = 1..context. Norms, activations, biases and softmax are ignored.
    """
    layers = matmul_parameters(decoder_layers(model))
    head = get_submodule(model, get_architecture(model).lm_head).weight.numel()
    return 2 * (layers + head) + 2 * len(decoder_layers(model)) * attention_width(model) * (context + 1)


def timed_median(run: Callable[[], float | None], warmup: int, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` calls; ``run`` may return its own duration."""
    for _ in range(warmup):
        run()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        measured = run()
        durations.append(measured if measured is not None else time.perf_counter() - start)
    return statistics.median(durations)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def run_prefill(model: PreTrainedModel, ids: torch.Tensor) -> None:
    model(ids, use_cache=False)
    _synchronize(ids.device)


@torch.no_grad()
def decode_seconds(model: PreTrainedModel, ids: torch.Tensor, steps: int) -> float:
    """Prefill (untimed), then ``steps`` greedy single-token steps with the KV cache (timed)."""
    output = model(ids, use_cache=True)
    cache, token = output.cache, output.logits[:, -1:].argmax(-1)
    _synchronize(ids.device)
    start = time.perf_counter()
    for _ in range(steps):
        output = model(token, cache=cache, use_cache=True)
        cache, token = output.cache, output.logits[:, -1:].argmax(-1)
    _synchronize(ids.device)
    return time.perf_counter() - start


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's max-allocated counter, or the process's peak RSS (Linux ``clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    clear_refs = Path("/proc/self/clear_refs")
    if clear_refs.exists():
        clear_refs.write_text("5")


def peak_memory_bytes(device: torch.device) -> tuple[int | None, str]:
    """Peak since :func:`reset_peak_memory`: CUDA max allocated, else peak RSS (``VmHWM``) of this process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "peak_rss"
    return None, "unavailable"


def measure_speed(model: PreTrainedModel, options: SpeedOptions) -> dict[str, object]:
    """Parameters, layers, FLOPs/token and the timed prefill/decode with peak memory, as a JSON-ready dict."""
    device = model.device
    generator = torch.Generator().manual_seed(options.seed)
    vocab = decoder_config(model).vocab_size
    ids = torch.randint(0, vocab, (options.batch_size, options.prompt_len), generator=generator).to(device)
    gc.collect()
    reset_peak_memory(device)
    prefill = timed_median(lambda: run_prefill(model, ids), options.warmup, options.repeats)
    decode = timed_median(lambda: decode_seconds(model, ids, options.decode_tokens), options.warmup, options.repeats)
    peak, peak_kind = peak_memory_bytes(device)
    return {
        "parameters": model.num_parameters(),
        "layers": len(decoder_layers(model)),
        "flops_per_token": flops_per_token(model, options.prompt_len),
        "prefill_latency_s": prefill,
        "prefill_tokens_per_s": options.batch_size * options.prompt_len / prefill,
        "decode_tokens_per_s": options.batch_size * options.decode_tokens / decode,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "device": str(device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "settings": asdict(options),
    }


def speed_ratios(pruned: dict[str, object], source: dict[str, object]) -> dict[str, float]:
    """Measured speed-ups of a pruned model over its source, next to the ideal FLOPs ratio."""
    return {
        "prefill_speedup": source["prefill_latency_s"] / pruned["prefill_latency_s"],
        "decode_speedup": pruned["decode_tokens_per_s"] / source["decode_tokens_per_s"],
        "ideal_speedup_flops": source["flops_per_token"] / pruned["flops_per_token"],
        "parameter_ratio": pruned["parameters"] / source["parameters"],
    }
