"""No leftovers: SIGTERM/SIGINT during a save or a heal, stale temporaries of killed runs, I/O errors.

The interrupted runs are real ``python -m layerprune`` processes; a small driver stops the
step under test (``save_pretrained`` or a training step) and says so on a pipe of its own,
so the signal always lands in the middle of the work. Nothing waits on time: the test
blocks on that pipe (end of file means the child died first), the child waits for the
signal itself, and the child's output goes to files, so a full pipe cannot stall it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from layerprune.cli import main
from tiny_models import tiny_model_dir

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Runs the CLI with one method patched to do its work, write to the event pipe, then wait for a signal.
# SIGINT gets Python's own handler even where the test runner inherited it ignored (a background job).
DRIVER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import {module} as target
original = target.{cls}.{method}
def stopped(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    os.write({fd}, b"REACHED")
    while True:
        signal.pause()
    return result
setattr(target.{cls}, "{method}", stopped)
from layerprune.cli import main
sys.exit(main(sys.argv[1:]))
"""
# Only a safety net for a child that hangs: the test never sleeps or polls against a clock.
HANG_LIMIT_S = 600


@pytest.fixture
def model_dir(tmp_path) -> Path:
    tiny_model_dir(tmp_path / "dense")
    return tmp_path / "dense"


def _interrupt(argv: list[str], patch: tuple[str, str, str], signum: int) -> subprocess.CompletedProcess:
    """Run the CLI in a child, block until it signals that it is inside ``patch``, then send ``signum``."""
    module, cls, method = patch
    read_end, write_end = os.pipe()
    script = DRIVER.format(module=module, cls=cls, method=method, fd=write_end)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, os.fdopen(read_end, "rb") as event:
        process = subprocess.Popen(
            [sys.executable, "-c", script, *argv], stdout=out, stderr=err, text=True, env=env, pass_fds=(write_end,)
        )
        os.close(write_end)  # the child holds the only write end: its exit is end of file here
        select.select([event], [], [], HANG_LIMIT_S)
        reached = event.read(len(b"REACHED"))
        if reached != b"REACHED":
            process.wait(timeout=HANG_LIMIT_S)
            err.seek(0)
            raise AssertionError(f"the run never reached {method} (exit {process.returncode}): {err.read()}")
        process.send_signal(signum)
        try:
            process.wait(timeout=HANG_LIMIT_S)
        finally:
            process.kill()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, process.returncode, out.read(), err.read())


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_save_removes_the_temporary_directory(model_dir, tmp_path, signum, code):
    out = tmp_path / "pruned"
    argv = ["prune", "--model", str(model_dir), "--layers", "1", "--output", str(out)]
    result = _interrupt(argv, ("transformers", "PreTrainedModel", "save_pretrained"), signum)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense"], "no output and no .pruned.tmp-* folder"


@pytest.mark.slow
def test_sigterm_during_heal_removes_checkpoints_and_temporaries(model_dir, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"line {i} of healing text"}) + "\n" for i in range(16)))
    out = tmp_path / "healed"
    argv = ["heal", "--model", str(model_dir), "--data", str(data), "--heal-method", "full", "--max-steps", "3"]
    argv += ["--validation-size", "0", "--output", str(out)]
    result = _interrupt(argv, ("layerprune.healing.trainer", "HealingTrainer", "training_step"), signal.SIGTERM)
    assert result.returncode == 143, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "dense"], "no output, no checkpoints"


def test_stale_temporaries_of_dead_runs_are_removed_and_reported(model_dir, tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    # Alive until the test closes its stdin, however long the test takes.
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        stale = [tmp_path / ".pruned.tmp-0a1b2c3d", tmp_path / f".pruned.tmp-{dead.stdout.strip()}-0a1b2c3d"]
        running = tmp_path / f".pruned.tmp-{alive.pid}-0a1b2c3d"
        for folder in [*stale, running]:
            folder.mkdir()
            (folder / "model.safetensors").write_bytes(b"half written")
        argv = ["prune", "--model", str(model_dir), "--layers", "1", "--output", str(tmp_path / "pruned")]
        assert main(argv) == 0
    finally:
        alive.stdin.close()
        alive.wait()
    assert all(not folder.exists() and str(folder) in caplog.text for folder in stale)
    assert running.is_dir(), "a temporary of a run that is still writing is left alone"
    assert (tmp_path / "pruned" / "config.json").is_file()


def test_permission_error_while_writing_is_one_line(model_dir, tmp_path, monkeypatch, capsys):
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if ".tmp-" in self.name:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    argv = ["prune", "--model", str(model_dir), "--layers", "1", "--output", str(tmp_path / "pruned")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense"]
