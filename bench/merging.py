"""Merging vs deletion on the embedded model (SmolLM2-135M, 30 layers) with 8 layers removed, no healing.

Run from the repository root:

    LAYERPRUNE_DATA=/work/shared/data PYTHONPATH=src python bench/merging.py

Prints (1) WikiText-2 test perplexity of the dense model, of SLM with each merge operator,
of LaCo and of LLM-Streamline (MSE), next to deletion by reverse order and by BI; (2) each
merge operator applied to the runs that BI deletes (part ``fixed``: the same layers, merged
into the layer below instead of deleted; ``keep-first`` there *is* BI deletion); and (3) the
time to score the same SLM candidates with the cached evaluation and with the naive deep
copy, measured side by side in this run. Perplexity uses the first ``--ppl-windows``
non-overlapping windows of ``--ppl-len`` tokens of ``wiki.test.raw`` (affordable on a shared
2-core CPU; not the full test split). Calibration and Streamline training text come from the
WikiText-2 *train* slice.
"""

from __future__ import annotations

import argparse
import time

import torch

from layerprune.calibration import CalibrationConfig, load_calibration
from layerprune.data_paths import data_dir
from layerprune.evaluation.perplexity import PerplexityOptions, perplexity
from layerprune.merging import (
    MERGE_OPERATORS,
    SIMILARITIES,
    CachedEvaluator,
    LayerStack,
    MergeConfig,
    SlmConfig,
    apply_stack,
    deep_copy_final_hidden,
    format_groups,
    merge_model,
    slm_search,
)
from layerprune.merging.streamline import StreamlineConfig, replace_block
from layerprune.metrics import METRICS, ScoringContext
from layerprune.models import decoder_layers, load_model
from layerprune.surgery import remove_layers


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remove", type=int, default=8, help="layers to remove")
    parser.add_argument("--calib-samples", type=int, default=4)
    parser.add_argument("--calib-len", type=int, default=64)
    parser.add_argument("--ppl-windows", type=int, default=4)
    parser.add_argument("--ppl-len", type=int, default=512)
    parser.add_argument("--train-samples", type=int, default=64, help="Streamline training windows (128 tokens)")
    parser.add_argument("--streamline-lr", type=float, default=3e-4)
    parser.add_argument("--streamline-epochs", type=int, default=1)
    parser.add_argument("--timing-candidates", type=int, default=8)
    parser.add_argument("--laco-c", type=int, default=3, help="LaCo's C (layers fused per merge)")
    parser.add_argument("--timing-threshold", type=float, default=0.9, help="SLM threshold whose candidates are timed")
    parser.add_argument("--parts", default="dense,delete,streamline,timing,laco,slm", help="what to run, in order")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        _, self.tokenizer = load_model("default")
        train = data_dir() / "wikitext2" / "raw_slices" / "wiki.train.nonempty.first1MB.txt"
        self.calibration = load_calibration(
            self.tokenizer, CalibrationConfig(str(train), args.calib_samples, args.calib_len)
        )
        self.training = load_calibration(self.tokenizer, CalibrationConfig(str(train), args.train_samples, 128, seed=1))
        self.rows: list[tuple[str, str, float, float]] = []

    def ppl(self, model) -> float:
        options = PerplexityOptions(seq_len=self.args.ppl_len, max_windows=self.args.ppl_windows)
        return perplexity(model, self.tokenizer, "wikitext2", options, data_dir())["ppl"]

    def record(self, name: str, model, detail: str, seconds: float) -> None:
        value = self.ppl(model)
        self.rows.append((name, detail, seconds, value))
        print(
            f"{name:28s} {len(decoder_layers(model)):3d} layers  ppl {value:9.2f}  ({seconds:.0f} s)  {detail}",
            flush=True,
        )

    def dense(self) -> None:
        self.record("dense", load_model("default")[0], "", 0.0)

    def deletion(self, metric: str) -> None:
        model, _ = load_model("default")
        started = time.perf_counter()
        context = ScoringContext(calibration=self.calibration, batch_size=8)
        removed = METRICS.get(metric)(model, context).removal_order(self.args.remove)
        remove_layers(model, removed, method=metric)
        self.record(f"delete: {metric}", model, f"removed {removed}", time.perf_counter() - started)

    def merge(self, method: str, operator: str) -> MergeConfig:
        model, _ = load_model("default")
        config = MergeConfig(method=method, num_layers=self.args.remove, operator=operator)
        config.laco.merge_layers = self.args.laco_c  # C − 1 layers go per merge: K must be reachable
        result = merge_model(model, self.calibration, config)
        detail = f"{result.target.describe(self.args.remove)}; {', '.join(format_groups(result.stack))}"
        self.record(f"merge: {method} {operator}", model, f"{detail}; {result.evaluations} candidates", result.seconds)
        return result

    def fixed_groups(self, operator: str) -> None:
        """Merge the runs that BI deletion removes into the layer below each run: operators compared on equal groups."""
        model, _ = load_model("default")
        started = time.perf_counter()
        context = ScoringContext(calibration=self.calibration, batch_size=8)
        removed = METRICS.get("bi")(model, context).removal_order(self.args.remove)
        stack = LayerStack.initial(decoder_layers(model), operator)
        for first, last in reversed(_runs(removed)):
            stack = stack.merge(first - 1, last)  # base: the kept layer below the run
        apply_stack(model, stack, method="bench-fixed", operator=operator)
        self.record(f"merge bi runs: {operator}", model, ", ".join(format_groups(stack)), time.perf_counter() - started)

    def streamline(self) -> None:
        model, _ = load_model("default")
        started = time.perf_counter()
        config = StreamlineConfig(
            num_layers=self.args.remove,
            learning_rate=self.args.streamline_lr,
            epochs=self.args.streamline_epochs,
            batch_size=4,
        )
        result = replace_block(model, self.calibration, self.training, config)
        detail = (
            f"[{result.first}–{result.last}] → {result.first}; mse {result.losses[0]:.4g} → {result.losses[-1]:.4g}"
        )
        self.record("replace: streamline mse", model, detail, time.perf_counter() - started)


def candidate_timing(bench: Bench, threshold: float) -> None:
    """Score the first N candidates that SLM visits at ``threshold``, cached and by deep copy, side by side."""
    model, _ = load_model("default")
    batches = list(bench.calibration.batches(8))
    started = time.perf_counter()
    evaluator = CachedEvaluator(model, batches)
    setup = time.perf_counter() - started
    visited: list[LayerStack] = []
    slm_search(
        LayerStack.initial(decoder_layers(model), "rdsc"), _recording(evaluator, visited), threshold, SlmConfig()
    )
    visited = visited[: bench.args.timing_candidates]
    similarity, masks = SIMILARITIES.get("cosine"), [mask for _, mask in batches]
    cached, naive, worst = 0.0, 0.0, 0.0
    for stack in visited:
        started = time.perf_counter()
        fast = similarity(evaluator.reference, evaluator.final_hidden(stack), masks)
        cached += time.perf_counter() - started
        started = time.perf_counter()
        slow = similarity(evaluator.reference, deep_copy_final_hidden(model, stack, batches), masks)
        naive += time.perf_counter() - started
        worst = max(worst, abs(fast - slow))
    count = len(visited)
    print(f"\ncandidate search, {count} SLM candidates (threshold {threshold:.4f}), cosine, {len(batches)} batches")
    print(f"  cached:    {cached:7.1f} s  (+ {setup:.1f} s one-time capture)")
    print(f"  deep copy: {naive:7.1f} s")
    print(f"  ratio cached/deep-copy: {cached / naive:.3f} per candidate, {(cached + setup) / naive:.3f} with capture")
    print(f"  max |similarity difference|: {worst:.2e}")


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive indices: [12, 13, 14, 25] → [(12, 14), (25, 25)]."""
    runs: list[tuple[int, int]] = []
    for index in sorted(indices):
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def _recording(evaluator: CachedEvaluator, visited: list[LayerStack]):
    def score(stack: LayerStack) -> float:
        visited.append(stack)
        return evaluator(stack)

    return score


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    print(f"WikiText-2 test, first {args.ppl_windows} windows of {args.ppl_len} tokens; remove {args.remove} of 30")
    print(f"calibration: {args.calib_samples} × {args.calib_len} tokens of the WikiText-2 train slice\n")
    parts = {
        "dense": bench.dense,
        "delete": lambda: [bench.deletion(metric) for metric in ("reverse-order", "bi")],
        "streamline": bench.streamline,
        "timing": lambda: candidate_timing(bench, args.timing_threshold),
        "laco": lambda: bench.merge("laco", "rdsc"),
        "slm": lambda: [bench.merge("slm", operator) for operator in MERGE_OPERATORS.names()],
        "fixed": lambda: [bench.fixed_groups(operator) for operator in MERGE_OPERATORS.names()],
    }
    for part in args.parts.split(","):
        parts[part]()


if __name__ == "__main__":
    main()
