"""Mutation count for ``layerprune.width``: plant one-line mutants one at a time, run the width tests.

Each mutant replaces one exact line fragment of one file in a temporary copy of ``src/``
(the working tree is never touched) and runs the width tests against that copy, stopping
at the first failure. A mutant is *killed* when the tests fail, *survived* when they pass.
A fragment that no longer occurs is reported as ``stale`` (the list must follow the code).

    PYTHONPATH=src python bench/mutants_width.py              # all mutants
    PYTHONPATH=src python bench/mutants_width.py --only owl   # names containing "owl"
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WIDTH = "src/layerprune/width"
FAST = [  # hand-computed cases first, so most mutants die within seconds
    "tests/test_width_released.py",
    "tests/test_width_obs.py",
    "tests/test_width_sparsify.py",
    "tests/test_width_dsa.py",
]
SLOW = ["tests/test_width_models.py", "tests/test_width_cli.py", "tests/test_pipeline_width.py"]  # survivors only

# name: (file under src/layerprune/width, exact fragment, replacement)
MUTANTS: dict[str, tuple[str, str, str]] = {
    "owl direction reversed": ("allocation_owl.py", "spread([-r for r in ratios]", "spread(ratios"),
    "owl pooled test inverted": ("allocation_owl.py", 'if threshold == "pooled":', 'if threshold != "pooled":'),
    "owl mean → median": ("allocation_owl.py", "(s > m * s.mean())", "(s > m * s.median())"),
    "alpha direction reversed (multiplicative)": (
        "allocation_alpha.py",
        "1 - epsilon + 2 * epsilon * (",
        "1 + epsilon - 2 * epsilon * (",
    ),
    "alpha direction reversed (additive)": (
        "allocation_alpha.py",
        "return spread(alphas, context.target",
        "return spread([-a for a in alphas], context.target",
    ),
    "alpha sizes ignored": (
        "allocation_alpha.py",
        "[sum(w.numel() for w in layer.values()) for layer in context.weights]",
        "[1 for layer in context.weights]",
    ),
    "alpha scale by layer count": ("allocation_alpha.py", "target * sum(sizes)", "target * len(sizes)"),
    "alpha hill count n − 1": (
        "allocation_alpha.py",
        "alphas = 1 + count / (tails",
        "alphas = 1 + (count - 1) / (tails",
    ),
    "alpha window top 2.5p": ("allocation_alpha.py", "1.5 * peak", "2.5 * peak"),
    "alpha window low end fixed": (
        "allocation_alpha.py",
        "torch.log10(torch.tensor(0.95 * peak)).item()",
        "0.95 * peak",
    ),
    "alpha KS uses n − 1": (
        "allocation_alpha.py",
        "(index[None, :] - start[:, None]) / count[:, None]",
        "(index[None, :] - start[:, None]) / (count[:, None] - 1)",
    ),
    "alpha median one index off": (
        "allocation_alpha.py",
        "descending[:k] / descending[k]",
        "descending[:k] / descending[k - 1]",
    ),
    "slimgpt heads in one batch": ("slimgpt.py", "batches = [1] * request.count", "batches = [request.count]"),
    "slimgpt channel option inverted": (
        "slimgpt.py",
        'elif request.channel_batches == "halving":',
        'elif request.channel_batches != "halving":',
    ),
    "released head score w²/L_jj": (
        "obs.py",
        "(columns.pow(2).sum(dim=2) / diagonal.pow(2))",
        "(columns.pow(2).sum(dim=2) / diagonal)",
    ),
    "released score option inverted": ("obs.py", 'if score == "released":', 'if score != "released":'),
    "released batches floor 32": ("obs.py", "max(size, 64)", "max(size, 32)"),
    "released batches start (k − 256)/2": ("obs.py", "(count - 512) // 2", "(count - 256) // 2"),
    "released batches cap 2048": ("obs.py", "max(size, 64), 1024)", "max(size, 64), 2048)"),
    "obs damping absolute": ("obs.py", "diagonal += damp * diagonal.mean()", "diagonal += damp"),
    "obs dead weights kept": ("obs.py", "weight[:, dead] = 0.0", "pass"),
    "obs compensation sign": ("obs.py", "weight[:, columns] -= weight", "weight[:, columns] += weight"),
    "obs schur update sign": (
        "obs.py",
        "(inverse - inverse[:, drop] @ solved)",
        "(inverse + inverse[:, drop] @ solved)",
    ),
    "obs hessian without 2": ("obs.py", "scaled = 2 * self.sum", "scaled = self.sum"),
    "sparsegpt saliency w²/U_jj": (
        "pruner_sparsegpt.py",
        "block.pow(2) / diagonal.pow(2), request)",
        "block.pow(2) / diagonal, request)",
    ),
    "sparsegpt 2:4 saliency w²/U_jj": (
        "pruner_sparsegpt.py",
        "block[:, j : j + 4].pow(2) / diagonal[j : j + 4].pow(2)",
        "block[:, j : j + 4].pow(2) / diagonal[j : j + 4]",
    ),
    "sparsegpt error not scaled": (
        "pruner_sparsegpt.py",
        "errors[:, j] = (block[:, j] - pruned) / diagonal[j]",
        "errors[:, j] = block[:, j] - pruned",
    ),
    "sparsegpt no lazy batch update": (
        "pruner_sparsegpt.py",
        "weight[:, end:] -= errors @",
        "weight[:, end:] += errors @",
    ),
    "sparsegpt threshold strict": (
        "pruner_sparsegpt.py",
        "return saliency <= threshold",
        "return saliency < threshold",
    ),
    "sparsegpt threshold rounded": (
        "pruner_sparsegpt.py",
        "[int(saliency.numel() * request.sparsity)]",
        "[round(saliency.numel() * request.sparsity)]",
    ),
    "sparsegpt mask option inverted": ("pruner_sparsegpt.py", 'if request.mask == "row":', 'if request.mask != "row":'),
    "sparsify ignores sparsegpt_mask": ("sparsify.py", "config.damp, config.sparsegpt_mask", 'config.damp, "row"'),
    "dsa pooled test inverted": (
        "allocation_dsa.py",
        'if context.config.dsa_scores == "pooled":',
        'if context.config.dsa_scores != "pooled":',
    ),
    "dsa outliers at 4× the mean": (
        "allocation_dsa.py",
        "(values > 5 * values.mean())",
        "(values > 4 * values.mean())",
    ),
    "wanda ‖X‖²": ("sparse.py", "diagonal.clamp_min(0).sqrt()", "diagonal.clamp_min(0)"),
    "mask count floored": (
        "sparse.py",
        "count = round(sparsity * scores.shape[1])",
        "count = int(sparsity * scores.shape[1])",
    ),
    "2:4 keeps the lowest": ("sparse.py", "stable=True)[..., :2]", "stable=True)[..., 2:]"),
    "spread λ not doubled": ("sparse.py", "target + 2 * lam * (n - mean)", "target + lam * (n - mean)"),
    "spread normalised by max": ("sparse.py", "(s - low) / (high - low) if high", "(s - low) / high if high"),
    "ratio schedule ln(i + 2)": (
        "schedule.py",
        "math.log(i + 1) / math.log(num_layers)",
        "math.log(i + 2) / math.log(num_layers)",
    ),
    "plan channel size 2·hidden": ("prune.py", "channel = 3 * hidden", "channel = 2 * hidden"),
    "prune ignores head_score": ("prune.py", "config.damp, config.head_score", 'config.damp, "exact"'),
}


def plant(source: Path, name: str) -> bool:
    """Apply mutant ``name`` to the copy under ``source``; False if its fragment is not there exactly once."""
    path, fragment, replacement = MUTANTS[name]
    file = source / "layerprune" / "width" / path
    text = file.read_text()
    if text.count(fragment) != 1:
        return False
    file.write_text(text.replace(fragment, replacement))
    return True


def run_tests(source: Path, timeout: int) -> bool:
    """True when the width tests pass against ``source`` (the mutant survived): the fast files, then the slow."""
    return _passes(source, FAST, timeout) and _passes(source, SLOW, timeout)


def _passes(source: Path, tests: list[str], timeout: int) -> bool:
    """Run pytest in a forked child (torch and transformers are imported once, in the parent)."""
    child = os.fork()
    if child == 0:  # the child imports layerprune from the mutated copy
        sys.path[:0] = [str(source), str(ROOT / "tests")]
        os.chdir(ROOT)
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
        pythonpath = f"pythonpath={source}"  # replaces pyproject's ``pythonpath = ["src"]``, which would shadow it
        os._exit(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-o", pythonpath, *tests]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.5)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    return False  # a mutant that hangs the tests is caught by them


def _preload() -> None:
    """Import what every test run needs before forking, so each child starts in seconds."""
    import transformers

    for family in ("llama", "qwen3", "mistral", "phi3", "gemma3"):
        importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    transformers.AutoModelForCausalLM  # noqa: B018  (resolves the lazy module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the mutants whose name contains this")
    parser.add_argument("--start", default="", help="skip the mutants listed before the first whose name has this")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per mutant")
    args = parser.parse_args()
    _preload()
    outcomes: dict[str, str] = {}
    names = list(MUTANTS)
    names = names[next(i for i, n in enumerate(names) if args.start in n) :]
    for name in (n for n in names if args.only in n):
        with tempfile.TemporaryDirectory() as directory:
            source = Path(directory) / "src"
            shutil.copytree(ROOT / "src", source)
            began = time.perf_counter()
            if not plant(source, name):
                outcomes[name] = "stale"
            else:
                outcomes[name] = "survived" if run_tests(source, args.timeout) else "killed"
            print(f"{outcomes[name]:>8}  {time.perf_counter() - began:6.1f} s  {name}", flush=True)
    planted = [o for o in outcomes.values() if o != "stale"]
    summary = {"killed": planted.count("killed"), "total": len(planted), "stale": len(outcomes) - len(planted)}
    print(json.dumps(summary | {"survived": [n for n, o in outcomes.items() if o == "survived"]}))


if __name__ == "__main__":
    main()
