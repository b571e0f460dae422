"""The saving from shared work: a 2 × 2 study against its four cells as separate ``layerprune run``s.

The study ``bench/shared-2x2.yaml`` ({bi, magnitude-l2} × {partial, lora} on the quickstart recipe, 2 heal
steps, 4 PPL windows) evaluates the dense model once and scores both metrics in one calibration pass; four
separate runs repeat both. Both orders are timed (study first, then runs first) so that a load that drifts
during the session does not favour one side; the ratio printed is study / separate runs, per order and summed.
The final perplexities of each cell and its separate run must be equal (same fingerprints, same seed).

    LAYERPRUNE_DATA=/work/shared/data python bench/shared_work.py --output /tmp/shared-work
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

STUDY = Path(__file__).with_name("shared-2x2.yaml")
CELLS = list(itertools.product(["bi", "magnitude-l2"], ["partial", "lora"]))
SETTINGS = ["heal.train.max_steps=2", "evaluate.perplexity.max_windows=4"]


def timed(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def layerprune(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "layerprune", *arguments]


def study(root: Path) -> float:
    return timed(layerprune("study", str(STUDY), "--output", str(root / "study")))


def separate_runs(root: Path) -> float:
    total = 0.0
    for metric, method in CELLS:
        overrides = [f"select.metric={metric}", f"heal.method={method}", *SETTINGS]
        arguments = ["run", "quickstart", "--output", str(root / f"run-{metric}-{method}")]
        total += timed(layerprune(*arguments, *(part for o in overrides for part in ("--set", o))))
    return total


def final_ppl(directory: Path) -> float:
    return json.loads((directory / "results.json").read_text())["final"]["perplexity"]["wikitext2"]["ppl"]


def check_equal(root: Path) -> None:
    for metric, method in CELLS:
        cell = root / "study" / "cells" / f"metric-{metric}_method-{method}"
        assert final_ppl(cell) == final_ppl(root / f"run-{metric}-{method}"), (metric, method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="scratch directory (replaced)")
    root = parser.parse_args().output
    totals = {"study": 0.0, "runs": 0.0}
    for order in (("study", "runs"), ("runs", "study")):
        shutil.rmtree(root, ignore_errors=True)
        seconds = {name: (study if name == "study" else separate_runs)(root) for name in order}
        check_equal(root)
        print(
            f"order {' → '.join(order)}: study {seconds['study']:.0f} s, separate runs {seconds['runs']:.0f} s, "
            f"ratio {seconds['study'] / seconds['runs']:.2f}; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        totals = {k: totals[k] + seconds[k] for k in totals}
    print(
        f"both orders: study {totals['study']:.0f} s, runs {totals['runs']:.0f} s, "
        f"ratio {totals['study'] / totals['runs']:.2f}"
    )


if __name__ == "__main__":
    main()
