"""Benchmark: the embedded SmolLM2-135M on zeroshot7 and WikiText-2, dense and with 8 of 30 layers removed.

    PYTHONPATH=src python bench/eval_default.py --limit 500 --data-dir ../shared/data

Each variant is loaded fresh, pruned with the given selection method (``reverse-order``;
``bi`` once the metrics issue has landed: a method missing from the metric registry is
reported and skipped), evaluated with :func:`layerprune.evaluation.evaluate`, and written
to ``OUT_DIR/<variant>.json``. A Markdown table with the wall times goes to
``OUT_DIR/eval_default.md`` for BENCHMARKS.md. ARC-Challenge has no local data in
``shared/data``; offline it is skipped and the zeroshot7 average covers the other six.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from layerprune.cli.common import console
from layerprune.data_paths import data_dir
from layerprune.evaluation import EvalConfig, HarnessOptions, PerplexityOptions, evaluate
from layerprune.evaluation.results import compare_table, read_results, write_results
from layerprune.evaluation.tasks import SUITES
from layerprune.metrics import METRICS, score
from layerprune.models import load_model
from layerprune.saving import atomic_write_text
from layerprune.surgery import remove_layers

REPO = Path(__file__).resolve().parents[1]
SUITE = "zeroshot7"
DEFAULT_METHODS = "dense,reverse-order,bi"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500, help="first N examples per task")
    parser.add_argument("--data-dir", default=str(data_dir()))
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="variants, comma separated")
    parser.add_argument("--remove", type=int, default=8, help="layers to remove in the pruned variants")
    parser.add_argument("--batch-size", type=int, default=HarnessOptions.batch_size)
    parser.add_argument("--seq-len", type=int, default=PerplexityOptions.seq_len)
    parser.add_argument("--ppl-windows", type=int, default=None, help="first N WikiText-2 windows (default: all)")
    parser.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    return parser.parse_args()


def prepared_model(method: str, remove: int):
    """The embedded model, pruned by ``method`` (``dense``: untouched), and the removed layers."""
    model, tokenizer = load_model("default")
    if method == "dense":
        return model, tokenizer, []
    indices = score(model, tokenizer, metrics=[method], calib="default").removal_order(method, remove)
    remove_layers(model, indices, method=method)
    return model, tokenizer, indices


def markdown(runs: dict[str, dict]) -> str:
    """One Markdown row per variant: the zeroshot7 metric of each task, the average, PPL and wall times."""
    suite = SUITES.get(SUITE)
    header = [
        "variant",
        "layers",
        *(f"{t} ({suite.metric_for(t)})" for t in suite.tasks),
        "avg",
        "wikitext2 PPL",
        "tasks s",
        "PPL s",
        "total s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, run in runs.items():
        tasks = [run["tasks"].get(t, {}).get(suite.metric_for(t)) for t in suite.tasks]
        average = run["suites"][SUITE]["value"]
        cells = [
            name,
            str(run["num_layers"]),
            *(f"{v:.4f}" if v is not None else "n/a" for v in tasks),
            f"{average:.4f}",
            f"{run['perplexity']['wikitext2']['ppl']:.2f}",
            f"{run['wall_time_s']['tasks']:.0f}",
            f"{run['wall_time_s']['ppl:wikitext2']:.0f}",
            f"{run['settings'].get('bench_total_s', sum(run['wall_time_s'].values())):.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    config = EvalConfig(
        tasks=[SUITE],
        ppl=["wikitext2"],
        data_dir=args.data_dir,
        harness=HarnessOptions(limit=args.limit, batch_size=args.batch_size, skip_missing=True),
        perplexity=PerplexityOptions(seq_len=args.seq_len, max_windows=args.ppl_windows),
    )
    out_dir = Path(args.out_dir)
    for method in args.methods.split(","):
        if method != "dense" and method not in METRICS:
            console.print(f"[yellow]skipping {method}: not in the metric registry on this branch[/]")
            continue
        start = time.perf_counter()
        model, tokenizer, removed = prepared_model(method, args.remove)
        name = method if method == "dense" else f"{method} -{args.remove}"
        results = evaluate(model, tokenizer, config, model_name=f"default {name}")
        results["settings"]["bench_total_s"] = time.perf_counter() - start
        write_results(out_dir / f"{method}.json", results)
        console.print(f"{name}: removed {removed}, {results['settings']['bench_total_s']:.0f} s")
    runs = recorded_runs(out_dir, DEFAULT_METHODS.split(","), args.remove)
    console.print(compare_table(list(runs.values()), list(runs)))
    atomic_write_text(out_dir / "eval_default.md", markdown(runs))


def recorded_runs(out_dir: Path, methods: list[str], remove: int) -> dict[str, dict]:
    """Every variant with a results file in ``out_dir`` (this run's and earlier runs'), in ``methods`` order."""
    paths = {method: out_dir / f"{method}.json" for method in methods}
    return {
        method if method == "dense" else f"{method} -{remove}": read_results(path)
        for method, path in paths.items()
        if path.is_file()
    }


if __name__ == "__main__":
    main()
