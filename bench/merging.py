"""Merging benches that are not a comparison of recipes (that one is ``layerprune study merging``).

Run from the repository root:

    LAYERPRUNE_DATA=/work/shared/data PYTHONPATH=src python bench/merging.py --parts timing,fixed

``timing``: the time to score the SLM candidates visited at ``--timing-threshold`` with the
cached evaluation and with the naive deep copy, measured side by side in this run, and their
largest similarity difference. ``fixed``: each merge operator applied to the runs that BI
deletion removes (selected by :func:`layerprune.pipeline.select_layers`; the same layers merged
into the kept layer below instead of deleted, so ``keep-first`` *is* BI deletion), with the
WikiText-2 test perplexity of the first ``--ppl-windows`` windows of ``--ppl-len`` tokens.
Calibration: ``--calib-samples`` × ``--calib-len`` tokens of the WikiText-2 *train* slice.
"""

from __future__ import annotations

import argparse
import time

import torch

from layerprune.calibration import CalibrationConfig, load_calibration
from layerprune.evaluation.perplexity import PerplexityOptions, perplexity
from layerprune.merging import (
    MERGE_OPERATORS,
    SIMILARITIES,
    CachedEvaluator,
    LayerStack,
    SlmConfig,
    apply_stack,
    deep_copy_final_hidden,
    format_groups,
    slm_search,
)
from layerprune.models import decoder_layers, load_model
from layerprune.pipeline import select_layers
from layerprune.pipeline.recipe import SelectSection


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remove", type=int, default=8, help="layers to remove")
    parser.add_argument("--calib-samples", type=int, default=4)
    parser.add_argument("--calib-len", type=int, default=64)
    parser.add_argument("--ppl-windows", type=int, default=4)
    parser.add_argument("--ppl-len", type=int, default=512)
    parser.add_argument("--timing-candidates", type=int, default=8)
    parser.add_argument("--timing-threshold", type=float, default=0.9, help="SLM threshold whose candidates are timed")
    parser.add_argument("--parts", default="timing,fixed", help="what to run, in order")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def calibration_set(args: argparse.Namespace, tokenizer):
    # WikiText-2 train text from $LAYERPRUNE_DATA (wikitext2/raw_slices), else the Hub; see `layerprune data`.
    return load_calibration(tokenizer, CalibrationConfig("wikitext2", args.calib_samples, args.calib_len))


def fixed_groups(args: argparse.Namespace, operator: str) -> None:
    """Merge the runs that BI deletion removes into the layer below each run: operators compared on equal groups."""
    model, tokenizer = load_model("default")
    select = SelectSection(metric="bi", num_layers=args.remove, batch_size=8)
    removed = select_layers(model, tokenizer, select, calibration_set(args, tokenizer)).indices
    stack = LayerStack.initial(decoder_layers(model), operator)
    for first, last in reversed(_runs(removed)):
        stack = stack.merge(first - 1, last)  # base: the kept layer below the run
    apply_stack(model, stack, method="bench-fixed", operator=operator)
    options = PerplexityOptions(seq_len=args.ppl_len, max_windows=args.ppl_windows)
    value = perplexity(model, tokenizer, "wikitext2", options)["ppl"]
    print(f"merge bi runs: {operator:10s} {len(decoder_layers(model)):3d} layers  ppl {value:9.2f}  "
          f"{', '.join(format_groups(stack))}", flush=True)  # fmt: skip


def candidate_timing(args: argparse.Namespace) -> None:
    """Score the first N candidates that SLM visits at ``threshold``, cached and by deep copy, side by side."""
    model, tokenizer = load_model("default")
    batches = list(calibration_set(args, tokenizer).batches(8))
    started = time.perf_counter()
    evaluator = CachedEvaluator(model, batches)
    setup = time.perf_counter() - started
    visited: list[LayerStack] = []
    slm_search(
        LayerStack.initial(decoder_layers(model), "rdsc"), _recording(evaluator, visited), args.timing_threshold,
        SlmConfig(),
    )  # fmt: skip
    visited = visited[: args.timing_candidates]
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
    print(f"candidate search, {len(visited)} SLM candidates (threshold {args.timing_threshold:.4f}), cosine")
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
    parts = {
        "timing": lambda: candidate_timing(args),
        "fixed": lambda: [fixed_groups(args, operator) for operator in MERGE_OPERATORS.names()],
    }
    for part in args.parts.split(","):
        parts[part]()


if __name__ == "__main__":
    main()
