"""layerprune away from its workshop: an installed wheel in an empty directory, and a fresh clone with no
``shared`` folder beside it, both run the shipped recipes offline (issue 22).

Both tests make a new virtualenv. To keep CI short, the new venv sees the test environment's
installed packages through a ``.pth`` line (torch and the rest are not installed again); layerprune
itself comes from the wheel, or from the clone's own editable install, and the tests check that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from layerprune.pipeline.recipe import shipped_names

REPO = Path(__file__).resolve().parents[1]
WHEEL_LIMIT = 15 * 1024 * 1024
pytestmark = pytest.mark.slow


def offline_environment(**extra: str) -> dict[str, str]:
    """This environment without our source path or data folder, with the Hub switched off."""
    environment = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "LAYERPRUNE_DATA", "VIRTUAL_ENV"}}
    return {**environment, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra}


def new_venv(path: Path, with_pip: bool) -> Path:
    """A virtualenv at ``path`` that also sees the test environment's packages (after its own)."""
    command = [sys.executable, "-m", "venv", str(path), *([] if with_pip else ["--without-pip"])]
    subprocess.run(command, check=True)
    purelib = subprocess.run(
        [path / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "zz-test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path / "bin"


def run(command: list[str] | str, cwd: Path, environment: dict[str, str], timeout: int = 3600) -> float:
    """Run ``command``; fail with its output's tail unless it exits 0. Returns the wall time in seconds."""
    began = time.perf_counter()
    options = {"cwd": cwd, "env": environment, "capture_output": True, "text": True, "timeout": timeout}
    done = subprocess.run(command, shell=isinstance(command, str), **options)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
    return time.perf_counter() - began


def build_wheel(outdir: Path) -> Path:
    """``python -m build --wheel`` on a copy of the checkout (no stale build/ folder can leak into it)."""
    source = copy_checkout(outdir.parent / "source")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(source)], check=True)
    (wheel,) = outdir.glob("layerprune-*.whl")
    return wheel


def test_installed_wheel_runs_offline_from_an_empty_directory(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    assert wheel.stat().st_size <= WHEEL_LIMIT
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"layerprune/recipes/{name}.yaml" for name in shipped_names("recipes")} <= names
    assert {f"layerprune/studies/{name}.yaml" for name in shipped_names("studies")} <= names
    for relative in json.loads((REPO / "src/layerprune/data/embedded/MANIFEST.json").read_text())["files"]:
        assert f"layerprune/data/embedded/{relative}" in names
    assert "layerprune/data/embedded/dolly15k/PROVENANCE.md" in names

    bin_dir = new_venv(tmp_path / "venv", with_pip=False)
    # --force-reinstall: the test environment's own layerprune (seen through the .pth) must not count as installed.
    pip = [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--quiet", "--no-deps"]
    pip.append("--force-reinstall")
    subprocess.run([*pip, str(wheel)], check=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    environment = offline_environment()
    where = subprocess.run(
        [bin_dir / "python", "-c", "import layerprune; print(layerprune.__file__)"],
        cwd=empty,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(tmp_path / "venv")  # the wheel's copy, not the checkout's

    seconds = run([bin_dir / "layerprune", "run", "quickstart", "--output", "X"], empty, environment)
    results = json.loads((empty / "X" / "results.json").read_text())
    assert results["final"]["perplexity"]["wikitext2"]["source"].startswith("embedded")
    print(f"\nwheel {wheel.stat().st_size / 1e6:.2f} MB; quickstart from the installed wheel: {seconds:.0f} s")

    dry_runs = [["run", name, "--output", f"dry/{name}", "--dry-run"] for name in shipped_names("recipes")]
    dry_runs += [["study", name, "--output", f"dry/{name}", "--dry-run"] for name in shipped_names("studies")]
    loop = f"for arguments in {dry_runs!r}:\n    assert main(arguments) == 0, arguments"
    script = f"from layerprune.cli import main\n{loop}"
    run([bin_dir / "python", "-c", script], empty, environment)
    assert not (empty / "dry").exists()

    # the command; --ppl-windows 16 (the quickstart's count) keeps CI from scoring all ~560 windows
    evaluate = ["eval", "--model", "default", "--ppl", "wikitext2", "--tasks", "arc_easy", "--limit", "20"]
    evaluate += ["--ppl-windows", "16"]
    run([bin_dir / "layerprune", *evaluate, "--output", "eval.json"], empty, environment)
    evaluated = json.loads((empty / "eval.json").read_text())
    assert evaluated["tasks"]["arc_easy"]["samples"] == 20 and evaluated["data"]["arc_easy"]["source"] == "embedded"
    assert 10 < evaluated["perplexity"]["wikitext2"]["ppl"] < 100


def copy_checkout(target: Path) -> Path:
    for name in checkout_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)
    return target


def checkout_files() -> list[str]:
    """The checkout's files as git sees them (tracked and untracked-but-not-ignored, as they are on disk now)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the fresh-clone test copies the files git lists")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    return [name for name in listed if name and (REPO / name).is_file()]


def test_fresh_clone_runs_the_readme_command_without_shared_data(tmp_path):
    clone = copy_checkout(tmp_path / "layerprune")  # nothing else in tmp_path: no ../shared beside the clone
    assert not (clone.parent / "shared").exists()
    new_venv(clone / ".venv", with_pip=True)  # setup.sh keeps an existing .venv and installs into it
    readme = (REPO / "README.md").read_text()
    command = "bash scripts/setup.sh && .venv/bin/layerprune run quickstart --output runs/quickstart"
    assert command in readme
    seconds = run(command, clone, offline_environment())
    results = json.loads((clone / "runs" / "quickstart" / "results.json").read_text())
    assert results["final"]["perplexity"]["wikitext2"]["source"].startswith("embedded")
    where = subprocess.run(
        [clone / ".venv" / "bin" / "python", "-c", "import layerprune; print(layerprune.__file__)"],
        env=offline_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(clone)
    print(f"\nfresh clone: setup.sh + quickstart {seconds:.0f} s")
