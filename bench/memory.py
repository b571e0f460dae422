"""Benchmark: peak memory of streamed surgery and scoring against the weights' size, and streamed scoring's speed.

    PYTHONPATH=src python bench/memory.py --steps build,prune,score,clean       # the ~3 GB random Llama
    PYTHONPATH=src python bench/memory.py --steps embedded                      # streamed / in-memory wall time
    PYTHONPATH=src python bench/memory.py --steps all-metrics                   # `score --metrics all`, default model

Each step runs in its own subprocess; its peak RSS is the child's ``ru_maxrss`` (``os.wait4``).

* ``build``: a random Llama-architecture checkpoint (bf16, ~3 GB, 1 GB shards) written
  tensor by tensor with :func:`~layerprune.streaming.shards.write_shards` (never all in memory);
* ``prune``: :func:`~layerprune.streaming.stream_remove` of 25 % of the layers (goal ≤ 0.25 × weights);
* ``score``: :func:`~layerprune.streaming.scoring.stream_score` of bi, angular and ppl on
  16 × 128 random tokens (goal ≤ 0.5 × weights plus the calibration states), with the layer loads;
* ``embedded``: bi, angular and ppl on the embedded model at its default calibration, in memory
  and streamed (the wall-time ratio, and the scores' largest relative difference);
* ``all-metrics``: every metric on the embedded model at its default calibration, in memory, and
  streamed (every metric but taylor/taylor+, which need the model in memory);
* ``clean``: delete the random checkpoint and the pruned output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

WORK = Path("/tmp/layerprune-bench-memory")
SOURCE, PRUNED = WORK / "random-llama", WORK / "pruned"
LLAMA = dict(
    hidden_size=2048, intermediate_size=8192, num_hidden_layers=20, num_attention_heads=16, num_key_value_heads=16,
    vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False, dtype="bfloat16",
)  # fmt: skip
EMBEDDED_METRICS = ["bi", "angular", "ppl"]


def build() -> dict:
    """Write the random checkpoint one tensor at a time (seeded per tensor)."""
    from transformers import LlamaConfig

    from layerprune.streaming.shards import PlannedTensor, write_shards

    config = LlamaConfig(**LLAMA)
    SOURCE.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(SOURCE)
    planned = [PlannedTensor(name, "BF16", shape, _random(k, shape)) for k, (name, shape) in enumerate(_shapes(config))]
    write_shards(SOURCE, planned, max_shard_bytes=2**30, progress=False)
    return {"weights_bytes": sum(p.nbytes for p in planned), "tensors": len(planned)}


def _shapes(config) -> list[tuple[str, list[int]]]:
    h, m, v = config.hidden_size, config.intermediate_size, config.vocab_size
    layer = [("self_attn.q_proj", [h, h]), ("self_attn.k_proj", [h, h]), ("self_attn.v_proj", [h, h]),
             ("self_attn.o_proj", [h, h]), ("mlp.gate_proj", [m, h]), ("mlp.up_proj", [m, h]),
             ("mlp.down_proj", [h, m]), ("input_layernorm", [h]), ("post_attention_layernorm", [h])]  # fmt: skip
    layers = [(f"model.layers.{i}.{part}.weight", shape) for i in range(config.num_hidden_layers) for part, shape in
              layer]  # fmt: skip
    return [("model.embed_tokens.weight", [v, h]), *layers, ("model.norm.weight", [h]), ("lm_head.weight", [v, h])]


def _random(seed: int, shape: list[int]):
    def produce() -> torch.Tensor:
        if len(shape) == 1:
            return torch.ones(shape, dtype=torch.bfloat16)
        generator = torch.Generator().manual_seed(seed)
        return (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)

    return produce


def prune() -> dict:
    from layerprune.streaming import stream_remove

    count = LLAMA["num_hidden_layers"]
    removed = list(range(count - count // 4 - 1, count - 1))
    stream_remove(str(SOURCE), PRUNED, removed, overwrite=True, progress=False)
    return {"removed": removed, "output_bytes": sum(p.stat().st_size for p in PRUNED.glob("*.safetensors"))}


def score_random() -> dict:
    from layerprune.calibration import CalibrationConfig, CalibrationSet
    from layerprune.streaming.scoring import stream_score

    ids = torch.randint(0, LLAMA["vocab_size"], (16, 128), generator=torch.Generator().manual_seed(0))
    calibration = CalibrationSet(ids, torch.ones_like(ids), CalibrationConfig(source="random", samples=16))
    loads = _count_loads()
    scores = stream_score(str(SOURCE), EMBEDDED_METRICS, calib=calibration, batch_size=4, progress=False)
    states = 16 * 128 * LLAMA["hidden_size"] * 2 * (LLAMA["num_hidden_layers"] + 1)
    return {"layer_loads": loads(), "base_states_bytes": states, "ppl_first": scores.get("ppl").scores[:3]}


def _count_loads() -> Callable[[], int]:
    """Total layer loads of the streamed models built from now on (wraps StreamedModel.layer)."""
    from layerprune.streaming.layers import StreamedModel

    seen: list[StreamedModel] = []
    original = StreamedModel.__init__

    def init(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        seen.append(self)

    StreamedModel.__init__ = init
    return lambda: sum(model.loads for model in seen)


def embedded(metrics: list[str]) -> dict:
    """Scores on the embedded model in memory and streamed: wall times and the largest relative difference.

    ``LAYERPRUNE_BENCH_SAMPLES`` (environment) reduces the calibration from its default 10 × 128 tokens.
    """
    from layerprune.calibration import CalibrationConfig
    from layerprune.metrics import score
    from layerprune.models import load_model
    from layerprune.streaming.scoring import stream_score

    start = time.perf_counter()
    model, tokenizer = load_model("default")
    calib = CalibrationConfig(samples=int(os.environ.get("LAYERPRUNE_BENCH_SAMPLES", CalibrationConfig().samples)))
    in_memory = score(model, tokenizer, metrics, calib, progress=False)
    memory_seconds = time.perf_counter() - start
    del model
    streamed_metrics = [m for m in metrics if not m.startswith("taylor")]
    start = time.perf_counter()
    streamed = stream_score("default", streamed_metrics, calib, progress=False)
    streamed_seconds = time.perf_counter() - start
    difference = max(
        abs(a - b) / max(abs(b), 1e-12)
        for name in streamed_metrics
        for a, b in zip(streamed.get(name).scores, in_memory.get(name).scores, strict=True)
    )
    return {"in_memory_s": memory_seconds, "streamed_s": streamed_seconds, "ratio": streamed_seconds / memory_seconds,
            "max_relative_difference": difference, "streamed_metrics": streamed_metrics,
            "calibration": f"{calib.samples} x {calib.seq_len}"}  # fmt: skip


def clean() -> dict:
    import shutil

    shutil.rmtree(WORK, ignore_errors=True)
    return {}


STEPS = {
    "build": build,
    "prune": prune,
    "score": score_random,
    "embedded": lambda: embedded(EMBEDDED_METRICS),
    "all-metrics": lambda: embedded(_all_metrics()),
    "clean": clean,
}


def _all_metrics() -> list[str]:
    from layerprune.metrics import METRICS

    return METRICS.names()


def run_step(name: str) -> dict:
    """Run one step in a child process; its result plus wall time and peak RSS."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--child", name], stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"step {name} failed ({status})")
    result = json.loads(output.strip().splitlines()[-1])
    return {"step": name, "wall_s": time.perf_counter() - start, "peak_rss_bytes": usage.ru_maxrss * 1024, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="build,prune,score,clean")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(STEPS[args.child]()))
        return
    for name in args.steps.split(","):
        result = run_step(name)
        weights = _weights_on_disk()
        if name in {"build", "prune", "score"} and weights:
            result["peak_rss_over_weights"] = result["peak_rss_bytes"] / weights
        print(json.dumps(result), flush=True)


def _weights_on_disk() -> int | None:
    shards = list(SOURCE.glob("*.safetensors"))
    return sum(p.stat().st_size for p in shards) or None


if __name__ == "__main__":
    main()
