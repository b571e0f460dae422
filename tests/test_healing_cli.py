"""``layerprune heal`` / ``iterate`` from the command line, including two processes under ``accelerate launch``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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


def launch_heal(workspace: Path, arguments: list[str], *launcher: str, path: str = "") -> subprocess.CompletedProcess:
    """``accelerate launch [launcher] -m layerprune heal [arguments]`` in CPU processes (CUDA hidden)."""
    env = {**os.environ, "PYTHONPATH": f"{path}{ROOT / 'src'}", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "-m", "layerprune", "heal", *arguments]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_accelerate_launch_two_processes(workspace) -> None:
    """Two CPU processes (gloo DDP) through ``accelerate launch``.

    accelerate 1.15's ``--cpu --num_processes 2`` uses its simple launcher, which starts one
    process unless an MPI hostfile is given; ``--multi_gpu`` starts torchrun with two ranks,
    which train on the CPU here because CUDA is hidden.
    """
    launcher = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    done = launch_heal(workspace, heal_arguments(workspace, "ddp"), *launcher, "--dynamo_backend", "no")
    assert done.returncode == 0, done.stderr[-3000:]
    step = read_record(workspace / "ddp")["steps"][-1]
    assert step["processes"] == 2 and step["steps"] == 3 and step["distributed_type"] == "MULTI_CPU"
    assert step["tokens_seen"] > 3 * 2 * 10  # both ranks' tokens are counted


@pytest.mark.slow
def test_fsdp_config_two_processes_equal_one_process(workspace) -> None:
    """``configs/fsdp.yaml`` (FSDP2, full shard per decoder layer) on two gloo processes.

    With packing every example has ``seq_len`` trained tokens, so two processes with batch 2
    average the same token-mean gradient as one process with batch 4: the saved weights agree
    to float rounding, the frozen tensors are bitwise the input's, and the trained ones moved.
    ``tests/cpu_fsdp`` lets accelerate shard on CPU (see its docstring). LoRA is refused.
    """
    arguments = [*heal_arguments(workspace, "fsdp"), "--packing", "--heal-seq-len", "16", "--train-batch-size", "2"]
    fsdp = ["--config_file", str(ROOT / "configs" / "fsdp.yaml")]
    done = launch_heal(workspace, arguments, *fsdp, path=f"{ROOT / 'tests' / 'cpu_fsdp'}{os.pathsep}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["heal", *arguments, "--train-batch-size", "4", "--output", str(workspace / "one")]) == 0
    step = read_record(workspace / "fsdp")["steps"][-1]
    assert step["processes"] == 2 and step["distributed_type"] == "FSDP"
    sharded, single, start = (load_file(workspace / name / "model.safetensors") for name in ("fsdp", "one", "tiny"))
    assert sharded.keys() == single.keys()
    trained = {"lm_head.weight", "model.norm.weight"} | {k for k in sharded if k.startswith("model.layers.3.")}
    for name, tensor in sharded.items():
        torch.testing.assert_close(tensor, single[name], rtol=0, atol=1e-7)
        assert torch.equal(tensor, start[name]) != (name in trained), name
    refused = launch_heal(workspace, [*arguments, "--heal-method", "lora", "--output", str(workspace / "lora")], *fsdp,
                          path=f"{ROOT / 'tests' / 'cpu_fsdp'}{os.pathsep}")  # fmt: skip
    assert "does not run under FSDP" in refused.stderr
    assert refused.returncode == 1 and "exitcode  : 2" in refused.stderr  # torchrun reports each rank's exit 2
    assert not (workspace / "lora").exists() and not (workspace / "lora.checkpoints").exists()
