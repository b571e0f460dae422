"""No leftovers: SIGTERM/SIGINT during a save or a heal, stale temporaries of killed runs, I/O errors.

The interrupted runs are real ``layerprune`` processes stopped inside the step under test
(``save_pretrained`` or a training step) by :func:`process_support.interrupt`, which waits on
an event the child writes there (not on time), so the signal always lands in the middle of the work.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from layerprune.cli import main
from process_support import interrupt
from tiny_models import tiny_model_dir


@pytest.fixture
def model_dir(tmp_path) -> Path:
    tiny_model_dir(tmp_path / "dense")
    return tmp_path / "dense"


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_save_removes_the_temporary_directory(model_dir, tmp_path, signum, code):
    out = tmp_path / "pruned"
    argv = ["prune", "--model", str(model_dir), "--layers", "1", "--output", str(out)]
    result = interrupt(argv, ("transformers", "PreTrainedModel", "save_pretrained"), signum)
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
    result = interrupt(argv, ("layerprune.healing.trainer", "HealingTrainer", "training_step"), signal.SIGTERM)
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
