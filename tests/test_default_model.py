"""Integration on the embedded default model (SmolLM2-135M-Instruct GGUF, 30 layers)."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from layerprune.merging.stack import apply_stack, fixed_stack
from layerprune.models import decoder_layers, load_model
from layerprune.models import loading as loading_module
from layerprune.provenance import read_record
from layerprune.saving import save_model
from layerprune.streaming import stream_merge, stream_remove
from layerprune.surgery import remove_layers
from streaming_checks import assert_same_saved_model

pytestmark = pytest.mark.slow


def test_remove_8_of_30_save_and_reload_with_plain_transformers(tmp_path, monkeypatch):
    model, tokenizer = load_model("default")
    assert len(decoder_layers(model)) == 30 and model.dtype == torch.float32
    remove_layers(model, list(range(22, 30)), method="reverse-order")
    save_model(model, tokenizer, tmp_path / "pruned")

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "pruned")
    assert len(decoder_layers(reloaded)) == 22 and reloaded.config.num_hidden_layers == 22
    assert not hasattr(reloaded.config, "quantization_config")
    ids = reloaded_tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=1e-5, rtol=0)
        generated = reloaded.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 5
    assert reloaded.generation_config.eos_token_id == model.generation_config.eos_token_id
    assert read_record(tmp_path / "pruned")["removed_layers"] == list(range(22, 30))

    monkeypatch.setattr(loading_module, "_dequantize_to_cache", _must_not_run)
    start = time.perf_counter()
    again, _ = load_model("default")
    assert time.perf_counter() - start < 20, "the second load must read the cached safetensors"
    assert len(decoder_layers(again)) == 30


def test_streamed_surgery_equals_in_memory_surgery(tmp_path):
    """Issue 14 on the embedded model: a streamed prune and a streamed fixed-group merge write, tensor by tensor
    and bitwise, the model that in-memory surgery saves, with equal config, generation config and layerprune.json."""
    removed, groups = [3, 13, 14, 15, 16, 17, 25, 26], [(13, 17), (25, 26)]
    model, tokenizer = load_model("default")
    save_model(remove_layers(model, removed, method="manual"), tokenizer, tmp_path / "pruned-memory")
    stream_remove("default", tmp_path / "pruned-streamed", removed, progress=False)
    assert_same_saved_model(tmp_path / "pruned-streamed", tmp_path / "pruned-memory")

    model, tokenizer = load_model("default")
    stack = fixed_stack(decoder_layers(model), groups, "rdsc")  # what `merge --groups` does in memory
    save_model(apply_stack(model, stack, operator="rdsc"), tokenizer, tmp_path / "merged-memory")
    stream_merge("default", tmp_path / "merged-streamed", groups, operator="rdsc", progress=False)
    assert_same_saved_model(tmp_path / "merged-streamed", tmp_path / "merged-memory")
    assert len(read_record(tmp_path / "merged-streamed")["layer_map"]) == 30 - 4 - 1


def _must_not_run(*args, **kwargs):
    raise AssertionError("the GGUF was dequantized twice")
