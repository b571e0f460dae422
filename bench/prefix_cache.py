"""Prefix-cache speed-up: partial K=3 + ce healing with and without the frozen-prefix cache, side by side.

The healing *comparison* is a study (``layerprune study healing``); this script measures one
ratio. Both runs start from the same selection (``layerprune.pipeline.prune``), train for
several epochs on a few Dolly records (in one epoch each sample passes the frozen prefix once
either way, so the cache cannot pay off), and print the wall times, their ratio and the best
validation losses (equal when the cache is exact).

    LAYERPRUNE_DATA=/work/shared/data PYTHONPATH=src python bench/prefix_cache.py --metric bi
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from layerprune.healing import DataConfig, HealConfig, MethodConfig, TrainConfig, heal
from layerprune.models import load_model
from layerprune.pipeline import prune
from layerprune.pipeline.recipe import SelectSection


def healed_seconds(args: argparse.Namespace, cached: bool) -> tuple[float, float]:
    """Wall time of the heal call and its best validation loss, on a fresh copy of the pruned model."""
    model, tokenizer = load_model("default")
    prune(model, tokenizer, SelectSection(metric=args.metric, num_layers=args.remove, seed=args.seed))
    config = HealConfig(
        output=str(Path(args.output) / f"speedup-{'cached' if cached else 'plain'}"),
        method=MethodConfig("partial", 3, untie=True),
        data=DataConfig(
            "dolly", seq_len=args.heal_seq_len, packing=True, validation_size=16, max_examples=args.examples,
            seed=args.seed,
        ),
        train=TrainConfig(
            learning_rate=2e-4, batch_size=4, epochs=args.epochs, eval_steps=4, warmup=0, seed=args.seed,
            cache_prefix=cached,
        ),
        overwrite=True,
    )  # fmt: skip
    began = time.perf_counter()
    result = heal(model, tokenizer, config)
    return time.perf_counter() - began, result.summary["best_validation_loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", default="reverse-order", help="selection metric (8 layers by default)")
    parser.add_argument("--remove", type=int, default=8)
    parser.add_argument("--heal-seq-len", type=int, default=128, help="packed block length (heal.data.seq_len)")
    parser.add_argument("--examples", type=int, default=8, help="Dolly records")
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="/tmp/layerprune-bench-prefix-cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (wall_cached, loss_cached), (wall_plain, loss_plain) = (healed_seconds(args, c) for c in (True, False))
    report = {"epochs": args.epochs, "records": args.examples, "wall_cached_s": wall_cached}
    report |= {"wall_uncached_s": wall_plain, "speedup": wall_plain / wall_cached}
    report |= {"val_loss_cached": loss_cached, "val_loss_uncached": loss_plain}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
