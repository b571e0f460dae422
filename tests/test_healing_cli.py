"""``layerprune heal`` / ``iterate`` from the command line, including two processes under ``accelerate launch``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerprune.cli import main
from layerprune.healing import DATA_FORMATS, LOSSES, METHODS
from layerprune.provenance import read_record
from layerprune.saving import save_model
from tiny_models import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path):
    save_model(tiny_model("llama"), tiny_tokenizer(bos=True), tmp_path / "tiny")
    (tmp_path / "text.txt").write_text("\n".join(f"line {i} says {i * 3 % 7}" for i in range(32)))
    return tmp_path


def heal_arguments(workspace: Path, output: str) -> list[str]:
    return [
        "--model", str(workspace / "tiny"), "--data", str(workspace / "text.txt"), "--heal-seq-len", "24",
        "--validation-size", "4", "--max-steps", "3", "--train-batch-size", "2", "--eval-steps", "2",
        "--train-layers", "1", "--untie", "--output", str(workspace / output),
    ]  # fmt: skip


def test_heal_cli_and_user_errors(workspace, capsys) -> None:
    assert main(["heal", *heal_arguments(workspace, "out")]) == 0
    assert read_record(workspace / "out")["steps"][-1]["settings"]["method"]["untie"] is True
    config = json.loads((workspace / "out" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert main(["heal", *heal_arguments(workspace, "bad"), "--heal-method", "lorra"]) == 2
    assert "Did you mean 'lora'" in capsys.readouterr().err
    assert main(["heal", *heal_arguments(workspace, "bad"), "--heal-method", "qlora"]) == 2


def test_every_registered_name_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for registry in (METHODS, LOSSES, DATA_FORMATS):
        for name in registry.names():
            assert f"`{name}`" in readme, f"{registry.kind} {name} is not documented in README.md"


@pytest.mark.slow
def test_accelerate_launch_two_processes(workspace) -> None:
    """Two CPU processes (gloo DDP) through ``accelerate launch``.

    accelerate 1.15's ``--cpu --num_processes 2`` uses its simple launcher, which starts one
    process unless an MPI hostfile is given; ``--multi_gpu`` starts torchrun with two ranks,
    which train on the CPU here because CUDA is hidden.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "layerprune"]
    done = subprocess.run(
        [*launch, "heal", *heal_arguments(workspace, "ddp")], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    step = read_record(workspace / "ddp")["steps"][-1]
    assert step["processes"] == 2 and step["steps"] == 3
    assert step["tokens_seen"] > 3 * 2 * 10  # both ranks' tokens are counted
