"""Mutation count for ``layerprune.width``: plant one-line mutants one at a time, run the width tests.

Each mutant (``bench/mutants_width.txt``) replaces one exact line fragment of one file in a temporary copy of ``src/``
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

TABLE = Path(__file__).with_suffix(".txt")  # one mutant per line: name | file | exact fragment | replacement
MUTANTS = {
    name: (path, fragment, replacement)
    for name, path, fragment, replacement in (
        line.split(" | ") for line in TABLE.read_text().splitlines() if line and not line.startswith("#")
    )
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
