"""Memory limits: the in-memory size in the load dtype decides streaming, and a model that won't fit is refused."""

from __future__ import annotations

import pytest
import torch

from layerprune.cli import main
from layerprune.errors import UserError
from layerprune.models import load_model
from layerprune.streaming import mode
from tiny_models import tiny_model, tiny_model_dir


@pytest.fixture
def bf16_model(tmp_path):
    tiny_model_dir(tmp_path / "model", dtype=torch.bfloat16)
    return tmp_path / "model"


def test_loaded_bytes_counts_the_load_dtype(bf16_model) -> None:
    parameters = sum(p.numel() for p in tiny_model().parameters())
    assert mode.loaded_bytes(bf16_model) == 2 * parameters
    assert mode.loaded_bytes(bf16_model, torch.float32) == 4 * parameters


def test_a_model_whose_float32_copy_does_not_fit_streams_by_itself(bf16_model, monkeypatch) -> None:
    """The bf16 file fits; loaded as float32 it does not, so the automatic mode streams."""
    monkeypatch.setattr(mode, "available_memory", lambda: 3 * mode.loaded_bytes(bf16_model) // 2)
    assert mode.choose_streaming(str(bf16_model), None)[0] is False
    streams, why = mode.choose_streaming(str(bf16_model), None, torch.float32)
    assert streams and "is larger than the available memory" in why


def test_loading_a_model_that_does_not_fit_names_the_flags(bf16_model, monkeypatch) -> None:
    size = mode.loaded_bytes(bf16_model, torch.float32)
    monkeypatch.setattr(mode, "GIB", 2**10)  # KiB, so that the tiny sizes show in the message
    monkeypatch.setattr(mode, "available_memory", lambda: size - 1)
    expected = rf"needs {size / 2**10:.2f} GiB of memory loaded as float32, more than the {(size - 1) / 2**10:.2f}"
    with pytest.raises(UserError, match=expected + r" GiB available: .*--streaming; --dtype bfloat16"):
        load_model(str(bf16_model), dtype="float32")
    load_model(str(bf16_model), dtype="bfloat16")  # half the bytes: fits


def test_commands_that_cannot_stream_exit_2_with_the_flag(bf16_model, monkeypatch, capsys) -> None:
    monkeypatch.setattr(mode, "available_memory", lambda: 1000)
    assert main(["eval", "--model", str(bf16_model), "--ppl", "none.txt"]) == 2
    assert "score and prune stream it with --streaming" in capsys.readouterr().err


def test_a_gguf_whose_float32_copy_does_not_fit_is_refused_before_dequantizing(tmp_path, monkeypatch) -> None:
    """The embedded SmolLM2-135M: 134.5 M weights, 0.50 GiB as float32; nothing is written to the cache."""
    monkeypatch.setattr(mode, "available_memory", lambda: 2**29 - 1)
    expected = r"dequantizing .*SmolLM2.* needs 0\.50 GiB of memory as float32, more than the 0\.50 GiB available"
    with pytest.raises(UserError, match=expected + r": score and prune read it one layer at a time with --streaming"):
        load_model("default", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "gguf").exists() or not any((tmp_path / "cache" / "gguf").iterdir())


def test_a_gguf_whose_float32_copy_does_not_fit_streams_by_itself(monkeypatch) -> None:
    """The automatic mode counts a GGUF at its dequantized size: 4 bytes for each of its 134,515,008 weights."""
    size = mode.gguf_loaded_bytes("default")
    assert size == 4 * 134_515_008
    monkeypatch.setattr(mode, "available_memory", lambda: size + 1)
    assert mode.choose_streaming("default", None)[0] is False
    monkeypatch.setattr(mode, "available_memory", lambda: size - 1)
    streams, why = mode.choose_streaming("default", None)
    assert streams and "(0.50 GiB) is larger than the available memory" in why
    assert mode.gguf_loaded_bytes("no-such.gguf") is None and mode.gguf_loaded_bytes("org/name") is None
