"""Width pruning and sparsity on the embedded model: WikiText-2 PPL and wall time side by side in one run.

Parts (``--part``):

* ``structured``: SlimGPT (uniform and log-increase) vs magnitude vs Wanda-structured at
  each ``--ratios`` (fraction of decoder-layer projection parameters removed); ``--runs``
  adds variants (``slimgpt:log-increase:head_score=exact``);
* ``unstructured``: ``--pruner`` at each ``--sparsities`` with the uniform / OWL / AlphaPruning
  allocations, released defaults and variants side by side (``--allocations``,
  ``owl:owl_threshold=per-matrix``; ``uniform:sparsegpt_mask=row`` with ``--pruner sparsegpt``);
* ``combined``: depth (Block Influence) vs width (SlimGPT) vs both at ``--fewer`` of the
  decoder parameters removed; PPL, zero-shot accuracy (``--tasks`` at ``--limit``), prefill
  latency and decode throughput, every model pruned first and then measured side by side.

PPL is the evaluation stage's WikiText-2 protocol over the first ``--ppl-windows`` windows
of ``--ppl-length`` tokens (a reduced count, stated in the output).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from layerprune.calibration import CalibrationConfig
from layerprune.evaluation import (
    EvalConfig,
    HarnessOptions,
    PerplexityOptions,
    SpeedOptions,
    evaluate,
    measure_speed,
    perplexity,
)
from layerprune.models import decoder_layers, load_model
from layerprune.pipeline import prune
from layerprune.pipeline.recipe import SelectSection
from layerprune.width import SparsifyConfig, WidthConfig, sparsify, width_prune


def wikitext_ppl(model, tokenizer, args: argparse.Namespace) -> float:
    options = PerplexityOptions(seq_len=args.ppl_length, max_windows=args.ppl_windows)
    return perplexity(model, tokenizer, "wikitext2", options)["ppl"]


def decoder_parameters(model) -> int:
    return sum(p.numel() for p in decoder_layers(model).parameters())


def row(label: str, model, tokenizer, args, seconds: float, dense_params: int | None, **extra) -> dict:
    result = {"run": label, "ppl": wikitext_ppl(model, tokenizer, args), "prune_s": round(seconds, 1)}
    if dense_params is not None:  # width/depth; sparsity keeps every parameter (zeros in place)
        result["decoder_params_removed"] = round(1 - decoder_parameters(model) / dense_params, 4)
    print(json.dumps(result | extra), flush=True)
    return result | extra


def structured(args: argparse.Namespace) -> list[dict]:
    dense, tokenizer = load_model("default")
    dense_params = decoder_parameters(dense)
    rows = [quality("dense", dense, tokenizer, args, dense_params) | {"prune_s": 0.0}]
    calibration = CalibrationConfig(samples=args.samples, seq_len=args.seq_len)
    runs = [run.split(":") for run in args.runs]  # method:schedule[:option=value,...]
    for ratio in args.ratios:
        for method, schedule, *options in runs:
            model, _ = load_model("default")
            overrides = overrides_of(options)
            config = WidthConfig(method=method, ratio=ratio, schedule=schedule, **overrides)
            result = width_prune(model, tokenizer, config, calibration)
            label = " ".join([method, schedule, str(ratio), *options])
            rows.append(quality(label, model, tokenizer, args, dense_params) | {"prune_s": round(result.seconds, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def unstructured(args: argparse.Namespace) -> list[dict]:
    _, tokenizer = load_model("default")
    calibration = CalibrationConfig(samples=args.samples, seq_len=args.seq_len)
    rows = []
    for sparsity in args.sparsities:
        for allocation, *options in (a.split(":") for a in args.allocations):
            model, _ = load_model("default")
            config = SparsifyConfig(
                args.pruner,
                sparsity,
                allocation=allocation,
                **overrides_of(options),
                dsa_generations=args.dsa_generations,
                dsa_population=args.dsa_population,
                dsa_function=f"{args.dsa_dir}/wanda-{sparsity:g}.json",
                dsa_state=f"{args.dsa_dir}/wanda-{sparsity:g}.search.json",
            )
            result = sparsify(model, tokenizer, config, calibration)
            label = " ".join([args.pruner, allocation, str(sparsity), *options])
            zeros = round(sum(result.achieved) / len(result.achieved), 4)
            extra = {
                "zeros": zeros,
                "sparsities": [round(v, 3) for v in result.sparsities],
                "function": result.function,
            }
            rows.append(row(label, model, tokenizer, args, result.seconds, None, **extra))
    return rows


def overrides_of(options: list[str]) -> dict[str, str | float]:
    """``["head_score=exact", "alpha_epsilon=0.1"]`` → config keyword arguments (numbers as floats)."""
    pairs = [option.split("=", 1) for option in ",".join(options).split(",") if option]
    return {key: _number(value) for key, value in pairs}


def _number(value: str) -> str | float:
    try:
        return float(value)
    except ValueError:
        return value


def combined(args: argparse.Namespace) -> list[dict]:
    """Depth (bi), width (SlimGPT) and both at ``--fewer`` of the decoder parameters, through the pipeline's
    ``prune`` and ``width_prune``; PPL, zero-shot (``--tasks`` at ``--limit``) and speed for each, in one run."""
    dense, tokenizer = load_model("default")
    dense_params, layers = decoder_parameters(dense), len(decoder_layers(dense))
    calibration = CalibrationConfig(samples=args.samples, seq_len=args.seq_len)
    depth_only, both_depth = round(args.fewer * layers), round(args.fewer * layers / 2)
    both_ratio = 1 - (1 - args.fewer) * layers / (layers - both_depth)  # the rest of the target, in width
    plans = {
        "dense": (0, 0.0),
        f"depth: bi −{depth_only} layers": (depth_only, 0.0),
        f"width: slimgpt {args.width_schedule} {args.fewer}": (0, args.fewer),
        f"both: bi −{both_depth} layers, then slimgpt": (both_depth, round(both_ratio, 4)),
    }
    models, rows = {}, []
    for label, (count, ratio) in plans.items():
        model, _ = load_model("default")
        began = time.perf_counter()
        if count:
            prune(model, tokenizer, SelectSection(metric="bi", num_layers=count), CalibrationConfig())
        if ratio:
            width_prune(model, tokenizer, WidthConfig(ratio=ratio, schedule=args.width_schedule), calibration)
        models[label], seconds = model, round(time.perf_counter() - began, 1)
        rows.append(quality(label, model, tokenizer, args, dense_params) | {"width_ratio": ratio, "prune_s": seconds})
    speed = SpeedOptions(prompt_len=128, decode_tokens=32, repeats=args.speed_repeats)
    for result, model in zip(rows, models.values(), strict=True):  # timed back to back, after all evaluation
        timing = measure_speed(model, speed)
        result["prefill_latency_s"] = round(timing["prefill_latency_s"], 4)
        result["decode_tokens_per_s"] = round(timing["decode_tokens_per_s"], 2)
        print(json.dumps(result), flush=True)
    return rows


def quality(label: str, model, tokenizer, args: argparse.Namespace, dense_params: int) -> dict:
    """WikiText-2 PPL and zero-shot accuracy of one structured or combined row, through the evaluation stage."""
    config = EvalConfig(
        tasks=args.tasks, ppl=["wikitext2"], harness=HarnessOptions(limit=args.limit),
        perplexity=PerplexityOptions(seq_len=args.ppl_length, max_windows=args.ppl_windows),
    )  # fmt: skip
    results = evaluate(model, tokenizer, config)
    accuracy = {task: round(results["tasks"][task]["acc"], 4) for task in args.tasks}
    return {
        "run": label,
        "ppl": results["perplexity"]["wikitext2"]["ppl"],
        **accuracy,
        **({"zero_shot_mean": round(sum(accuracy.values()) / len(accuracy), 4)} if accuracy else {}),
        "decoder_params_removed": round(1 - decoder_parameters(model) / dense_params, 4),
    }


def markdown(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k not in ("sparsities", "function")]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) and value > 1 else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("structured", "unstructured", "combined"), default="structured")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    parser.add_argument(
        "--allocations",
        nargs="+",
        default=[
            "uniform",
            "owl",
            "owl:owl_threshold=per-matrix",
            "alpha",
            "alpha:alpha_xmin=median,alpha_map=additive",
        ],
        help="unstructured: allocation[:field=value,...] (SparsifyConfig fields; the released defaults otherwise)",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["slimgpt:uniform", "slimgpt:log-increase", "magnitude:uniform", "wanda:uniform"],
        help="structured: method:schedule[:field=value,...] (WidthConfig fields: slimgpt:uniform:head_score=exact)",
    )
    parser.add_argument("--pruner", default="wanda")
    parser.add_argument("--dsa-generations", type=int, default=2)
    parser.add_argument("--dsa-population", type=int, default=4)
    parser.add_argument("--dsa-dir", default="bench/results/dsa", help="DSA: found functions and search states")
    parser.add_argument("--fewer", type=float, default=0.25, help="combined: fraction of decoder parameters removed")
    parser.add_argument("--width-schedule", default="log-increase")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--ppl-windows", type=int, default=20)
    parser.add_argument("--ppl-length", type=int, default=512)
    parser.add_argument("--speed-repeats", type=int, default=5)
    parser.add_argument("--tasks", nargs="*", default=["piqa", "winogrande"], help="zero-shot tasks (none: PPL only)")
    parser.add_argument("--limit", type=int, default=50, help="zero-shot documents per task")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {"structured": structured, "unstructured": unstructured, "combined": combined}[args.part](args)
    print(json.dumps({"settings": vars(args)}))
    print(markdown(rows))


if __name__ == "__main__":
    main()
