"""llama.cpp as the real client of a GGUF: load it, greedy-decode, and compare with transformers.

:func:`llamacpp_generate` runs llama.cpp (the ``xllamacpp`` wheel: ``pip install layerprune[llama]``)
in a child process, so that its C++ logs can be read: the block count it loaded (``n_layer``)
is taken from its own ``print_info`` line, not from the file. Generated ids come from the
native ``/completion`` endpoint with ``return_tokens`` (the OpenAI-style logprob list drops
tokens that are incomplete UTF-8). Prompts are token ids, so both clients see the same input.

:func:`compare_greedy` decodes the same ids with transformers and matches the two token
streams; a step where they differ counts as a tie, not a failure, when transformers' top-2
logit gap there is below ``tie_gap`` (two candidates llama.cpp's kernels may order either way).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layerprune.errors import UserError

N_LAYER = re.compile(r"print_info: n_layer\s+=\s+(\d+)")
EXTRA = "layerprune[llama]"


@dataclass
class LlamaCppRun:
    """What llama.cpp loaded and generated: ``tokens[i]`` for ``prompts[i]``, its prompt and decode speeds."""

    n_layer: int
    tokens: list[list[int]]
    decode_tokens_per_second: list[float]
    prompt_tokens_per_second: list[float] = field(default_factory=list)


@dataclass
class GreedyComparison:
    """Matched steps per prompt, steps that differ at a near-tie (reported), and real mismatches (failures)."""

    matched: list[int] = field(default_factory=list)
    ties: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)


def llamacpp_generate(path: str | Path, prompts: list[list[int]], n_predict: int, threads: int = 1) -> LlamaCppRun:
    """Greedy-decode ``n_predict`` tokens after each prompt (token ids) with llama.cpp, in a child process."""
    require_xllamacpp()
    request = json.dumps({"path": str(path), "prompts": prompts, "n_predict": n_predict, "threads": threads})
    child = subprocess.run(
        [sys.executable, "-m", "layerprune.gguf.llamacpp", request], capture_output=True, text=True, check=False
    )
    found = N_LAYER.search(child.stderr)
    if child.returncode != 0 or found is None:
        tail = " | ".join(child.stderr.strip().splitlines()[-3:])
        raise UserError(f"llama.cpp could not run {path}: {tail}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    return LlamaCppRun(
        int(found.group(1)), result["tokens"], result["decode_tokens_per_second"], result["prompt_tokens_per_second"]
    )


def require_xllamacpp() -> None:
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:
        raise UserError(f"llama.cpp's Python wheel xllamacpp is not installed: pip install '{EXTRA}'")


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    """In the child: start llama.cpp's server on the file and ask ``/completion`` for each prompt."""
    import urllib.request

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = request["path"]
    params.n_ctx = max(len(p) for p in request["prompts"]) + request["n_predict"] + 8
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = request["threads"]
    params.warmup = False
    params.verbosity = 4  # prints print_info: n_layer
    server = xllamacpp.Server(params)
    tokens, speeds, prompt_speeds = [], [], []
    for prompt in request["prompts"]:
        body = {"prompt": prompt, "n_predict": request["n_predict"], "samplers": ["top_k"], "top_k": 1,
                "temperature": 0, "return_tokens": True, "cache_prompt": False, "ignore_eos": True}  # fmt: skip
        http = urllib.request.Request(
            server.listening_address.rstrip("/") + "/completion",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(http, timeout=600).read())
        tokens.append(answer["tokens"])
        speeds.append(answer["timings"]["predicted_per_second"])
        prompt_speeds.append(answer["timings"]["prompt_per_second"])
    return {"tokens": tokens, "decode_tokens_per_second": speeds, "prompt_tokens_per_second": prompt_speeds}


@torch.no_grad()
def transformers_greedy(model, prompt: list[int], n_predict: int) -> tuple[list[int], list[float]]:
    """Greedy tokens of a transformers model and each step's top-2 logit gap."""
    ids = torch.tensor([prompt])
    tokens, gaps = [], []
    for _ in range(n_predict):
        logits = model(ids).logits[0, -1].float()
        top = torch.topk(logits, 2)
        tokens.append(int(top.indices[0]))
        gaps.append(float(top.values[0] - top.values[1]))
        ids = torch.cat([ids, top.indices[:1].view(1, 1)], dim=1)
    return tokens, gaps


def compare_greedy(model, prompts: list[list[int]], run: LlamaCppRun, tie_gap: float = 0.05) -> GreedyComparison:
    """Match llama.cpp's greedy tokens with transformers' on the same prompts, up to the first difference."""
    comparison = GreedyComparison()
    for index, (prompt, theirs) in enumerate(zip(prompts, run.tokens, strict=True)):
        ours, gaps = transformers_greedy(model, prompt, len(theirs))
        step = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), len(ours))
        comparison.matched.append(step)
        if step < len(ours):
            record = {"prompt": index, "step": step, "transformers": ours[step], "llama.cpp": theirs[step],
                      "gap": gaps[step]}  # fmt: skip
            (comparison.ties if gaps[step] < tie_gap else comparison.mismatches).append(record)
    return comparison


if __name__ == "__main__":
    print(json.dumps(_serve(json.loads(sys.argv[1]))))
