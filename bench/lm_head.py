"""Benchmark: the LM head's share of a perplexity-type pass, full logits against the chunked head + NLL.

    PYTHONPATH=src python bench/lm_head.py --model PATH.gguf [--windows 4 --seq-len 512 --threads 2]
    PYTHONPATH=src python bench/lm_head.py --model PATH.gguf --accuracy ../shared/data   # against fp64

Each variant runs in its own subprocess on the same random token windows (peak RSS is the
child's ``ru_maxrss``); one window at a time, as :func:`layerprune.evaluation.perplexity.perplexity` does:

* ``plain``: ``model(ids).logits`` then ``cross_entropy`` on all ``[T − 1, vocab]`` fp32 logits
  (what window_nll did before); head time = ``lm_head``'s forward (timed by hooks) + the loss;
* ``chunked``: :func:`layerprune.models.head.next_token_nll`; head time = :func:`~layerprune.models.head.head_nll`.

It prints each variant's wall time per window, head time and share, peak RSS, the two mean
NLLs (they must agree), and the ratio plain / chunked. ``--accuracy DATA_DIR`` instead scores the
first WikiText-2 test window both ways and with the head and softmax in fp64, and prints the relative errors.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from layerprune.evaluation.perplexity import load_text, token_windows
from layerprune.models import load_model
from layerprune.models.head import head_nll, head_skipped


def plain_window(model, ids: torch.Tensor) -> tuple[float, float]:
    """(NLL sum, head seconds) with the full logits."""
    head = model.get_output_embeddings()
    marks: list[float] = []
    hooks = [
        head.register_forward_pre_hook(lambda *_: marks.append(time.perf_counter())),
        head.register_forward_hook(lambda *_: marks.append(time.perf_counter())),
    ]
    logits = model(ids).logits[0, :-1].float()
    began = time.perf_counter()
    nll = F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
    for hook in hooks:
        hook.remove()
    return nll, marks[1] - marks[0] + time.perf_counter() - began


def chunked_window(model, ids: torch.Tensor) -> tuple[float, float]:
    """(NLL sum, head seconds) with the chunked head + NLL."""
    with head_skipped(model) as captured:
        model(ids)
    began = time.perf_counter()
    nll = head_nll(model, captured[-1][0, :-1], ids[0, 1:]).item()
    return nll, time.perf_counter() - began


VARIANTS = {"plain": plain_window, "chunked": chunked_window}


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model)
    vocab = model.get_output_embeddings().out_features
    windows = torch.randint(0, vocab, (args.windows + 1, 1, args.seq_len), generator=torch.Generator().manual_seed(0))
    run = VARIANTS[args.variant]
    with torch.no_grad():
        run(model, windows[0])  # warm-up
        began, nll, head = time.perf_counter(), 0.0, 0.0
        for ids in windows[1:]:
            window_nll, window_head = run(model, ids)
            nll, head = nll + window_nll, head + window_head
        total = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = {"seconds_per_window": total / args.windows, "head_share": head / total, "peak_rss_gib": peak}
    result["mean_nll"] = nll / (args.windows * (args.seq_len - 1))
    print(json.dumps(result))


def accuracy(args: argparse.Namespace) -> None:
    """Summed NLL of the first WikiText-2 window: fp64 head + softmax, full-logits cross_entropy, chunked."""
    model, tokenizer = load_model(args.model)
    ids = tokenizer(load_text("wikitext2", args.accuracy).text, return_tensors="pt").input_ids[0]
    window = token_windows(ids, args.seq_len, 1)
    with torch.no_grad(), head_skipped(model) as captured:
        model(window)
    hidden, targets = captured[-1][0, :-1], window[0, 1:]
    with torch.no_grad():
        exact = F.cross_entropy(F.linear(hidden.double(), model.lm_head.weight.double()), targets, reduction="sum")
        plain = F.cross_entropy(model.lm_head(hidden).float(), targets, reduction="sum")
        chunked = head_nll(model, hidden, targets)
    for name, value in (("plain", plain), ("chunked", chunked)):
        print(f"{name}: {value.item():.6f}, relative error {abs(value.item() - exact.item()) / exact.item():.2e}")
    print(f"fp64: {exact.item():.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--accuracy", metavar="DATA_DIR", help="compare both against fp64 on WikiText-2")
    args = parser.parse_args()
    if args.accuracy:
        return accuracy(args)
    if args.variant:
        return child(args)
    results = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
        print(variant, results[variant], flush=True)
    plain, chunked = results["plain"], results["chunked"]
    print(f"load average {os.getloadavg()[0]:.2f}; {args.windows} windows × {args.seq_len} tokens")
    print(f"wall per window plain/chunked: {plain['seconds_per_window'] / chunked['seconds_per_window']:.2f}")
    print(f"head share: plain {plain['head_share']:.1%}, chunked {chunked['head_share']:.1%}")
    print(f"peak RSS GiB: plain {plain['peak_rss_gib']:.2f}, chunked {chunked['peak_rss_gib']:.2f}")
    print(f"mean NLL: plain {plain['mean_nll']:.6f}, chunked {chunked['mean_nll']:.6f}")


if __name__ == "__main__":
    main()
