"""Benchmark: inference speed-up of a 25 %-shallower model against the FLOP ideal, in transformers and llama.cpp.

    PYTHONPATH=src python bench/speedup.py                                   # the embedded SmolLM2-135M (8 of 30)
    PYTHONPATH=src python bench/speedup.py --model <qwen .gguf> --remove 6   # Qwen2.5-Coder-0.5B (6 of 24)

Run it with nothing else on the machine. For each backend the dense and the pruned model are timed in this one
process, back to back, with the same random prompt ids:

* transformers (fp32, the model dequantized from the GGUF), both models in memory and timed in alternation
  (dense, pruned, dense, …) so that drifts in the machine's speed hit both: prefill of one ``--prompt-len``
  prompt and greedy decode tokens/s with the KV cache (:mod:`layerprune.evaluation.speed`), the median of
  ``--repeats`` rounds after one warm-up round;
* llama.cpp (``xllamacpp``, the file in its own quantization): the source GGUF against the same layers removed
  by direct GGUF surgery, prompt and decode tokens/s reported by the server (the median over ``--repeats``
  prompts).

The ideal is the FLOPs ratio L-layer / L'-layer of :func:`~layerprune.evaluation.speed.flops_per_token`
(decoder matmuls, attention scores at the prompt's context, and the LM head), for prefill at ``--prompt-len``
and for decode at ``--prompt-len + --decode-tokens / 2``. The removed layers are the last ones (which layers
go does not change the cost).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from layerprune.models import decoder_layers


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="a .gguf file, or 'default' (the embedded model)")
    parser.add_argument("--remove", type=int, default=8, help="how many of the last layers to remove")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-llamacpp", action="store_true")
    return parser.parse_args()


def transformers_rows(models: dict, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Prefill and decode speed of each model, measured in alternation (round r times every model once)."""
    from layerprune.evaluation.speed import decode_seconds, flops_per_token, run_prefill

    vocab = next(iter(models.values())).config.vocab_size
    ids = torch.randint(0, vocab, (1, args.prompt_len), generator=torch.Generator().manual_seed(0))
    times: dict[str, dict[str, list[float]]] = {name: {"prefill": [], "decode": []} for name in models}
    for round_ in range(args.repeats + 1):  # round 0 warms up
        for name, model in models.items():
            began = time.perf_counter()
            run_prefill(model, ids)
            prefill = time.perf_counter() - began
            decode = decode_seconds(model, ids, args.decode_tokens)
            if round_:
                times[name]["prefill"].append(prefill)
                times[name]["decode"].append(decode)
    return {
        name: {
            "layers": len(decoder_layers(model)),
            "flops_per_token": flops_per_token(model, args.prompt_len),
            "decode_flops_per_token": flops_per_token(model, args.prompt_len + args.decode_tokens // 2),
            "prefill_tokens_per_s": args.prompt_len / statistics.median(times[name]["prefill"]),
            "decode_tokens_per_s": args.decode_tokens / statistics.median(times[name]["decode"]),
        }
        for name, model in models.items()
    }


def llamacpp_rows(paths: dict[str, Path], args: argparse.Namespace, vocab: int) -> dict[str, dict[str, float]]:
    """llama.cpp's prompt and decode tokens/s per file: two server runs each, in alternation, medians over prompts."""
    from layerprune.gguf.llamacpp import llamacpp_generate

    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, vocab, (args.prompt_len,), generator=generator).tolist() for _ in range(args.repeats)]
    speeds = {name: {"prompt": [], "decode": [], "n_layer": 0} for name in paths}
    for _ in range(2):
        for name, path in paths.items():
            run = llamacpp_generate(path, prompts, n_predict=args.decode_tokens, threads=args.threads)
            speeds[name]["prompt"] += run.prompt_tokens_per_second
            speeds[name]["decode"] += run.decode_tokens_per_second
            speeds[name]["n_layer"] = run.n_layer
    return {
        name: {
            "n_layer": speed["n_layer"],
            "prefill_tokens_per_s": statistics.median(speed["prompt"]),
            "decode_tokens_per_s": statistics.median(speed["decode"]),
        }
        for name, speed in speeds.items()
    }


def print_table(name: str, dense: dict, pruned: dict, ideals: dict[str, float], layer_ratio: float) -> None:
    """Rows: measured speed-up, the FLOP ideal, the share of it reached, and the layer ratio L/L'."""
    for phase in ("prefill", "decode"):
        before, after = dense[f"{phase}_tokens_per_s"], pruned[f"{phase}_tokens_per_s"]
        ideal = ideals[phase]
        print(f"| {name} | {phase} tokens/s | {before:.1f} | {after:.1f} | {after / before:.2f}× | {ideal:.2f}× "
              f"| {after / before / ideal:.0%} | {layer_ratio:.2f}× |")  # fmt: skip


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    from layerprune.gguf.surgery import gguf_source, remove_gguf_layers
    from layerprune.models import decoder_config
    from layerprune.models.loading import load_model
    from layerprune.surgery import remove_layers

    model, _ = load_model(args.model)
    layers = len(decoder_layers(model))
    removed = list(range(layers - args.remove, layers))
    vocab = decoder_config(model).vocab_size
    measured = transformers_rows({"dense": model, "pruned": remove_layers(copy.deepcopy(model), removed)}, args)
    dense, pruned = measured["dense"], measured["pruned"]
    ideals = {
        "prefill": dense["flops_per_token"] / pruned["flops_per_token"],
        "decode": dense["decode_flops_per_token"] / pruned["decode_flops_per_token"],
    }
    layer_ratio = layers / (layers - args.remove)
    print(json.dumps({"load_average": os.getloadavg(), "transformers": measured}))
    print("| backend | measure | dense | pruned | speed-up | ideal (FLOPs) | of ideal | L/L' |")
    print("|---|---|---|---|---|---|---|---|")
    print_table("transformers fp32", dense, pruned, ideals, layer_ratio)
    if args.no_llamacpp:
        return
    source = gguf_source(args.model)
    with tempfile.TemporaryDirectory(prefix="layerprune-speedup-") as work:
        target = Path(work) / "pruned.gguf"
        remove_gguf_layers(source, target, removed)
        cpp = llamacpp_rows({"dense": source, "pruned": target}, args, vocab)
    print(json.dumps({"llama.cpp": cpp}))
    dense_cpp, pruned_cpp = cpp["dense"], cpp["pruned"]
    print_table(f"llama.cpp GGUF ({args.threads} threads)", dense_cpp, pruned_cpp, ideals, layer_ratio)


if __name__ == "__main__":
    main()
