"""Healing benchmark: the embedded model with 8 of 30 layers removed, healed four ways on one token budget.

Compares partial K=3 + ce (the paper's recipe), LoRA + ce, partial K=3 + ce+kd and LoRA + kd
(teacher: the dense model), all on Dolly-15k with the same budget, and reports WikiText-2
perplexity before/after and wall time; then the same partial run without the prefix cache
(speed-up and equality check). Every run starts from a fresh copy of the pruned model.
``--speedup-only`` compares cached and uncached partial training over several epochs, where
the cache pays off (in one epoch each sample passes the frozen prefix once either way).

    LAYERPRUNE_DATA=/work/shared/data PYTHONPATH=src python bench/heal.py --metric reverse-order
    LAYERPRUNE_DATA=/work/shared/data PYTHONPATH=src python bench/heal.py --speedup-only

Perplexity is ``layerprune.evaluation``'s WikiText-2 protocol over the first ``--ppl-windows``
windows of ``--ppl-length`` tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from layerprune.calibration import CalibrationConfig, load_calibration
from layerprune.data_paths import data_dir
from layerprune.evaluation import EvalConfig, HarnessOptions, PerplexityOptions, evaluate, perplexity
from layerprune.healing import DataConfig, HealConfig, LossConfig, MethodConfig, TrainConfig, heal
from layerprune.metrics import METRICS, ScoringContext
from layerprune.models import load_model
from layerprune.saving import write_json
from layerprune.surgery import remove_layers


@dataclass
class Recipe:
    label: str
    method: MethodConfig
    loss: LossConfig
    cache_prefix: bool = True


RECIPES = [
    Recipe("partial K=3, ce", MethodConfig("partial", 3, untie=True), LossConfig("ce")),
    Recipe("LoRA, ce", MethodConfig("lora"), LossConfig("ce")),
    Recipe("partial K=3, ce+kd", MethodConfig("partial", 3, untie=True), LossConfig("ce+kd")),
    Recipe("LoRA, kd", MethodConfig("lora"), LossConfig("kd")),
    Recipe("partial K=3, ce, no prefix cache", MethodConfig("partial", 3, untie=True), LossConfig("ce"), False),
]


def wikitext_ppl(model, tokenizer, windows: int, length: int) -> float:
    """WikiText-2 test perplexity (the evaluation stage's protocol) over the first ``windows`` × ``length`` tokens."""
    options = PerplexityOptions(seq_len=length, max_windows=windows)
    return perplexity(model, tokenizer, "wikitext2", options, data_dir=data_dir())["ppl"]


def zeroshot(model, tokenizer, limit: int) -> dict | None:
    """``zeroshot7`` through ``layerprune.evaluation`` on the local data: the average and the per-task results.

    None when ``limit`` is 0.
    """
    if not limit:
        return None
    config = EvalConfig(
        tasks=["zeroshot7"], data_dir=str(data_dir()), harness=HarnessOptions(limit=limit, skip_missing=True)
    )
    results = evaluate(model, tokenizer, config)
    return {"average": results["suites"]["zeroshot7"]["value"], "tasks": results["tasks"]}


def pruned(metric: str, count: int, seed: int):
    model, tokenizer = load_model("default")
    context = ScoringContext(seed=seed)
    if metric != "reverse-order":
        context.calibration = load_calibration(tokenizer, CalibrationConfig(seed=seed))
    indices = METRICS.get(metric)(model, context).removal_order(count)
    remove_layers(model, indices, method=metric)
    return model, tokenizer, indices


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    dense, tokenizer = load_model("default")
    results = {"budget_tokens": args.max_tokens, "seq_len": args.seq_len, "batch_size": args.batch_size}
    results["dense_ppl"] = wikitext_ppl(dense, tokenizer, args.ppl_windows, args.ppl_length)
    model, _, indices = pruned(args.metric, args.remove, args.seed)
    results |= {"metric": args.metric, "removed": indices}
    results["pruned_ppl"] = wikitext_ppl(model, tokenizer, args.ppl_windows, args.ppl_length)
    results["pruned_zeroshot7"] = zeroshot(model, tokenizer, args.zeroshot_limit)
    print(json.dumps(results), flush=True)
    results["runs"] = []
    for recipe in RECIPES[: args.recipes]:
        model, tokenizer, _ = pruned(args.metric, args.remove, args.seed)
        config = HealConfig(
            output=str(out / recipe.label.replace(" ", "_").replace(",", "").replace("=", "")),
            method=recipe.method,
            loss=recipe.loss,
            data=DataConfig(
                "dolly", seq_len=args.seq_len, packing=True, validation_size=args.validation, seed=args.seed
            ),
            train=TrainConfig(
                learning_rate=args.lr,
                batch_size=args.batch_size,
                max_tokens=args.max_tokens,
                eval_steps=args.eval_steps,
                warmup=0,
                logging_steps=1,
                seed=args.seed,
                cache_prefix=recipe.cache_prefix,
            ),
            overwrite=True,
        )
        began = time.perf_counter()
        result = heal(model, tokenizer, config, teacher=dense)
        wall = time.perf_counter() - began
        row = {
            "recipe": recipe.label,
            "wall_s": round(wall, 1),
            "ppl": wikitext_ppl(result.model, tokenizer, args.ppl_windows, args.ppl_length),
            "zeroshot7": zeroshot(result.model, tokenizer, args.zeroshot_limit),
        }
        row |= {k: v for k, v in result.summary.items() if k != "settings"}
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
        write_json(out / "results.json", results)
    return results


def prefix_speedup(args: argparse.Namespace) -> dict:
    """Partial K=3 + ce with and without the prefix cache over ``--speedup-examples`` records for several epochs."""
    torch.set_num_threads(args.threads)
    walls, losses = {}, {}
    for cached in (True, False):
        model, tokenizer, _ = pruned(args.metric, args.remove, args.seed)
        config = HealConfig(
            output=str(Path(args.output) / f"speedup-{'cached' if cached else 'plain'}"),
            method=MethodConfig("partial", 3, untie=True),
            data=DataConfig(
                "dolly",
                seq_len=args.seq_len,
                packing=True,
                validation_size=args.validation,
                max_examples=args.speedup_examples,
                seed=args.seed,
            ),
            train=TrainConfig(
                learning_rate=args.lr,
                batch_size=args.batch_size,
                epochs=args.speedup_epochs,
                eval_steps=args.eval_steps,
                warmup=0,
                seed=args.seed,
                cache_prefix=cached,
            ),
            overwrite=True,
        )
        began = time.perf_counter()
        result = heal(model, tokenizer, config)
        walls[cached], losses[cached] = time.perf_counter() - began, result.summary["best_validation_loss"]
    report = {"epochs": args.speedup_epochs, "records": args.speedup_examples, "wall_cached_s": walls[True]}
    report |= {"wall_uncached_s": walls[False], "speedup": walls[False] / walls[True]}
    report |= {"val_loss_cached": losses[True], "val_loss_uncached": losses[False]}
    print(json.dumps(report), flush=True)
    return report


def markdown(results: dict) -> str:
    header = ["recipe", "PPL before → after", "best val loss", "trainable params", "steps", "tokens", "wall (s)"]
    header += ["teacher (s)", "prefix cache (s)", "zeroshot7 before → after"]
    lines = [
        f"dense PPL {results['dense_ppl']:.2f}; pruned ({results['metric']}, removed {results['removed']}) "
        f"PPL {results['pruned_ppl']:.2f}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['recipe']} | {results['pruned_ppl']:.2f} → {r['ppl']:.2f} | {r['best_validation_loss']:.4f} | "
            f"{r['trainable_parameters']:,} | {r['steps']} | {r['tokens_seen']:,} | {r['wall_s']} | "
            f"{r['teacher_seconds']} | {r['cache_seconds']} | {_average(results['pruned_zeroshot7'])} → "
            f"{_average(r['zeroshot7'])} |"
        )
    return "\n".join(lines)


def _average(value: dict | None) -> str:
    return "–" if value is None else f"{value['average']:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", default="reverse-order")
    parser.add_argument("--remove", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-steps", type=int, default=4)
    parser.add_argument("--validation", type=float, default=16)
    parser.add_argument("--ppl-windows", type=int, default=16)
    parser.add_argument("--zeroshot-limit", type=int, default=200, help="zeroshot7 examples per task (0: skip)")
    parser.add_argument("--ppl-length", type=int, default=512)
    parser.add_argument("--recipes", type=int, default=len(RECIPES), help="run only the first N recipes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="/tmp/layerprune-bench-heal")
    parser.add_argument("--speedup-only", action="store_true", help="only the multi-epoch prefix-cache comparison")
    parser.add_argument("--speedup-examples", type=int, default=8, help="records for the speed-up runs")
    parser.add_argument("--speedup-epochs", type=float, default=4)
    args = parser.parse_args()
    if args.speedup_only:
        prefix_speedup(args)
        return
    print(markdown(run(args)))


if __name__ == "__main__":
    main()
