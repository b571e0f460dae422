"""Peak memory of streamed scoring and surgery on a random checkpoint four times the memory they may add (slow).

Each step runs in a child process that first runs it on a two-layer checkpoint (imports and
caches warm), then resets its peak RSS (``/proc/self/clear_refs``) and runs it on the
24-layer checkpoint: the peak's growth over the RSS at the reset must stay below
``BUDGET`` × the weights. A layer is 1/24 of the weights, so keeping every loaded layer
(or the freed ones in the allocator) fails the test several times over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from transformers import AutoModelForCausalLM, LlamaConfig

import layerprune
from layerprune.streaming.shards import PlannedTensor, write_shards

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc peak-RSS reset"),
]
LLAMA = dict(
    hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_key_value_heads=8, vocab_size=1024,
    tie_word_embeddings=False, dtype="bfloat16",
)  # fmt: skip
LAYERS = 24
BUDGET = 0.25
CHILD = """
import json, sys
from pathlib import Path
import torch
from layerprune.calibration import CalibrationConfig, CalibrationSet
from layerprune.streaming import stream_remove
from layerprune.streaming.scoring import stream_score

def kib(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])

ids = torch.randint(0, 1024, (2, 32), generator=torch.Generator().manual_seed(0))
calibration = CalibrationSet(ids, torch.ones_like(ids), CalibrationConfig(source="random", samples=2))
def step(source, output):
    if sys.argv[1] == "score":
        stream_score(source, ["bi", "angular", "ppl"], calib=calibration, batch_size=2, progress=False)
    else:
        stream_remove(source, output, [1], overwrite=True, progress=False)
step(sys.argv[2], sys.argv[4] + "-warm")
Path("/proc/self/clear_refs").write_text("5")
baseline = kib("VmRSS")
step(sys.argv[3], sys.argv[4])
print(json.dumps({"added_bytes": (kib("VmHWM") - baseline) * 1024}))
"""


def _random_checkpoint(directory: Path, layers: int) -> int:
    """A random bf16 Llama checkpoint written tensor by tensor (never in memory); its weights' bytes."""
    config = LlamaConfig(**LLAMA, num_hidden_layers=layers)
    config.save_pretrained(directory)
    with init_empty_weights():
        shapes = {name: list(p.shape) for name, p in AutoModelForCausalLM.from_config(config).state_dict().items()}
    planned = [PlannedTensor(name, "BF16", shape, _random(k, shape)) for k, (name, shape) in enumerate(shapes.items())]
    write_shards(directory, planned, max_shard_bytes=2**27, progress=False)
    return sum(p.nbytes for p in planned)


def _random(seed: int, shape: list[int]):
    return lambda: (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02).to(torch.bfloat16)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path, int]:
    root = tmp_path_factory.mktemp("memory")
    _random_checkpoint(root / "warm", 2)
    return root / "warm", root / "large", _random_checkpoint(root / "large", LAYERS)


@pytest.mark.parametrize("step", ["score", "prune"])
def test_streamed_step_adds_at_most_a_quarter_of_the_weights(checkpoints, tmp_path, step) -> None:
    warm, large, weights = checkpoints
    argv = [sys.executable, "-c", CHILD, step, str(warm), str(large), str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(Path(layerprune.__file__).parents[1])}
    child = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    added = json.loads(child.stdout.strip().splitlines()[-1])["added_bytes"]
    assert added <= BUDGET * weights, f"{step} added {added / 2**20:.0f} MiB for {weights / 2**20:.0f} MiB of weights"
