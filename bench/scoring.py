"""Scoring speed: the one-pass similarity metrics against a plain forward, and cached ppl against rebuilding.

Both ratios are measured side by side in one run on the same calibration batches:

1. ``similarity / forward``: bi, bi-global, angular (every n), cka and both matrices from one
   hooked pass, over one plain ``model(...)`` forward of the calibration set (goal ≤ 1.2);
2. ``cached ppl / naive ppl``: the ``ppl`` metric (layer inputs cached, removing layer i
   re-runs only the layers after it) over the anchors' way, a deep copy with the layer removed
   and a full forward for every layer (goal ≤ 0.6). The two must agree to relative 1e-5.

Run (CPU, embedded model; 32 × 256 is the default)::

    PYTHONPATH=src python bench/scoring.py [--samples 32 --seq-len 256] [--repeats 3] [--skip-ppl]

``--repeats`` takes the best of several forward/similarity timings (noise from shared cores);
``--skip-ppl`` leaves out the slow ppl comparison (30 full forwards for the naive side).

``--random-init`` builds the model from the spec's config with random weights (speed depends
only on shapes), so a GPU machine without the weights can run it from a folder holding
``config.json`` and the tokenizer files.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from layerprune.calibration import CalibrationConfig, load_calibration
from layerprune.metrics import score
from layerprune.models import load_model
from reference_metrics import naive_ppl

SIMILARITY_METRICS = ["bi", "bi-global", "angular", "cka"]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--random-init", action="store_true", help="random weights from the model folder's config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="forward/similarity timings: best of this many")
    parser.add_argument("--skip-ppl", action="store_true", help="measure only the similarity ratio")
    return parser.parse_args()


def build(args: argparse.Namespace):
    if not args.random_init:
        model, tokenizer = load_model(args.model)
    else:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.model), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    return model.to(args.device).eval(), tokenizer


def timed(function: Callable[[], object], device: str) -> tuple[float, object]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


@torch.no_grad()
def plain_forward(model, batches) -> None:
    for input_ids, attention_mask in batches:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


def main() -> None:
    args = parse_arguments()
    model, tokenizer = build(args)
    calibration = load_calibration(tokenizer, CalibrationConfig(samples=args.samples, seq_len=args.seq_len))
    batches = [(ids.to(args.device), mask.to(args.device)) for ids, mask in calibration.batches(args.batch_size)]
    plain_forward(model, batches[:1])  # warm-up
    threads = f"cpu ({torch.get_num_threads()} threads)"
    print(f"model {args.model} ({'random init' if args.random_init else 'weights'}), {args.device}: ", end="")
    print(torch.cuda.get_device_name() if args.device.startswith("cuda") else threads)
    print(f"calibration {args.samples} × {args.seq_len} tokens, batch size {args.batch_size}", flush=True)
    settings = dict(calib=calibration, batch_size=args.batch_size, progress=False)
    forward_times, similarity_times = [], []
    for _ in range(args.repeats):
        forward_times.append(report("plain forward", lambda: plain_forward(model, batches), args.device)[0])
        similarity = partial(score, model, metrics=SIMILARITY_METRICS, **settings)
        similarity_times.append(report("one-pass similarity (4 metrics)", similarity, args.device)[0])
    forward, similarity = min(forward_times), min(similarity_times)
    print(f"similarity / forward   = {similarity / forward:.3f}   (goal ≤ 1.2)", flush=True)
    if not args.skip_ppl:
        compare_ppl(model, batches, settings, forward, args.device)


def compare_ppl(model, batches, settings: dict, forward: float, device: str) -> None:
    base_time, _ = report("forward without lm_head", lambda: plain_forward(model.base_model, batches), device)
    cached_time, cached = report("cached ppl (all layers)", lambda: ppl_scores(model, settings), device)
    naive_time, naive = report("naive rebuild-per-layer ppl", lambda: naive_ppl(model, batches), device)
    worst = max(abs(a - b) / abs(b) for a, b in zip(cached, naive, strict=True))
    print(f"cached ppl / naive ppl = {cached_time / naive_time:.3f}   (goal ≤ 0.6)")
    print(f"lm_head share of a plain forward: {1 - base_time / forward:.2f}")
    print(f"max relative difference cached vs naive ppl: {worst:.2e}")


def ppl_scores(model, settings: dict) -> list[float]:
    return score(model, metrics=["ppl"], **settings).get("ppl").scores


def report(name: str, function: Callable[[], object], device: str) -> tuple[float, object]:
    seconds, result = timed(function, device)
    print(f"  {name:<34}{seconds:>10.2f} s", flush=True)
    return seconds, result


if __name__ == "__main__":
    main()
