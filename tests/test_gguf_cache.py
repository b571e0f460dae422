"""The GGUF cache written tensor by tensor equals what ``from_pretrained(gguf_file=...)`` dequantizes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from gguf_files import write_tiny_gguf
from layerprune.gguf.cache import write_cache
from layerprune.models import load_model


@pytest.mark.parametrize("layout", ["llama", "qwen2", "gemma3"])
def test_tensor_by_tensor_cache_equals_transformers_whole_dequantization(tmp_path, layout):
    path = write_tiny_gguf(tmp_path / f"{layout}.gguf", layout, 4)
    write_cache(path, tmp_path / "cache")
    ours = AutoModelForCausalLM.from_pretrained(str(tmp_path / "cache"), dtype=torch.float32).state_dict()
    theirs = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).state_dict()
    assert sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name


def test_load_model_of_a_gguf_reads_the_streamed_cache(tmp_path):
    path = write_tiny_gguf(tmp_path / "llama.gguf", "llama", 4)
    model, tokenizer = load_model(str(path), cache_dir=tmp_path / "cache")
    reference = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    tokens = torch.tensor([tokenizer("hello world").input_ids])
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, reference(tokens).logits)


def test_streaming_reads_the_gguf_itself_and_scores_as_the_fp32_cache(tmp_path):
    from layerprune.streaming import open_checkpoint
    from layerprune.streaming.scoring import stream_score

    path = write_tiny_gguf(tmp_path / "llama.gguf", "llama", 4)
    checkpoint = open_checkpoint(str(path), tmp_path / "cache")
    assert checkpoint.weight_map and set(checkpoint.weight_map.values()) == {"model.gguf"}
    assert not (tmp_path / "cache" / "gguf").exists()  # no fp32 copy on disk
    write_cache(path, tmp_path / "fp32")
    calibration = "default"
    direct = stream_score(str(path), ["bi", "ppl"], calibration, cache_dir=tmp_path / "cache")
    cached = stream_score(str(tmp_path / "fp32"), ["bi", "ppl"], calibration)
    for metric in ("bi", "ppl"):
        assert direct.get(metric).scores == cached.get(metric).scores


def test_chunked_dequantization_equals_gguf_whole_tensor(tmp_path):
    """A few rows at a time (chunks of 64 elements) gives gguf.dequantize's array exactly, for every type."""
    import numpy as np
    from gguf import dequantize

    from layerprune.gguf.cache import dequantized
    from layerprune.gguf.files import check_gguf

    reader = check_gguf(write_tiny_gguf(tmp_path / "qwen2.gguf", "qwen2", 2))
    types = set()
    for tensor in reader.tensors:
        chunked = dequantized(tensor, chunk_elements=64)
        assert chunked.dtype == np.float32
        np.testing.assert_array_equal(chunked, dequantize(tensor.data, tensor.tensor_type))
        types.add(tensor.tensor_type.name)
    assert {"Q4_K", "Q6_K", "Q5_0", "F32"} <= types
