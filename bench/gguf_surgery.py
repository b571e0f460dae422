"""Benchmark: direct GGUF surgery of the embedded SmolLM2-135M Q4_1 GGUF (8 of 30 layers removed).

    PYTHONPATH=src python bench/gguf_surgery.py

Prints, side by side:

* the surgery's wall time and peak RSS in a child process that runs only
  :func:`~layerprune.gguf.surgery.remove_gguf_layers` (``ru_maxrss`` by ``os.wait4``), against
  the file's size, and the whole ``layerprune prune --output X.gguf`` command's wall time and peak RSS
  (its Python imports, torch and transformers, included);
* the output's size, and llama.cpp's decode speed (``xllamacpp``, 1 thread, 64 greedy tokens after a
  short prompt, the median of three prompts) on the dense and the pruned file.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REMOVED = "20-27"
PROMPTS = [[504, 3575, 282, 4649, 314], [1604, 3987, 46477, 24, 94, 727], [504, 2124, 282, 1004, 314]]


def child(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of a child process."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env={**os.environ})
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{command} failed with status {status}")
    return time.perf_counter() - began, usage.ru_maxrss / 1024


def decode_speed(path: Path) -> float:
    from layerprune.gguf.llamacpp import llamacpp_generate

    return statistics.median(llamacpp_generate(path, PROMPTS, n_predict=64).decode_tokens_per_second)


def main() -> None:
    from layerprune.models.loading import default_gguf_path

    source = default_gguf_path()
    work = Path(tempfile.mkdtemp(prefix="layerprune-bench-gguf-"))
    surgery = (
        "from layerprune.gguf.surgery import remove_gguf_layers;"
        f"remove_gguf_layers({str(source)!r}, {str(work / 'direct.gguf')!r}, list(range(20, 28)))"
    )
    direct = child([sys.executable, "-c", surgery])
    cli = [sys.executable, "-m", "layerprune", "prune", "--layers", REMOVED, "--output", str(work / "cli.gguf")]
    command = child(cli)
    size, pruned_size = source.stat().st_size, (work / "direct.gguf").stat().st_size
    dense_speed, pruned_speed = decode_speed(source), decode_speed(work / "direct.gguf")
    mib = size / 2**20
    print(json.dumps({"load_average": os.getloadavg()}))
    print(f"file {mib:.1f} MiB → {pruned_size / 2**20:.1f} MiB ({pruned_size / size:.3f})")
    print(f"surgery alone: {direct[0]:.1f} s, peak RSS {direct[1]:.0f} MiB ({direct[1] / mib:.2f} × file)")
    print(f"prune command: {command[0]:.1f} s, peak RSS {command[1]:.0f} MiB ({command[1] / mib:.2f} × file)")
    ratio = pruned_speed / dense_speed
    print(f"llama.cpp decode (1 thread): {dense_speed:.1f} → {pruned_speed:.1f} tokens/s ({ratio:.2f}×)")


if __name__ == "__main__":
    main()
