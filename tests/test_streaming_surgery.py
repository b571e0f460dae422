"""Streamed surgery equals in-memory surgery: every tensor bitwise, config and layerprune.json, on every family."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from layerprune.errors import UserError
from layerprune.merging.stack import LayerStack, apply_stack
from layerprune.models import decoder_layers, load_model
from layerprune.saving import save_model
from layerprune.streaming import stream_keep, stream_merge, stream_remove
from layerprune.streaming.checkpoint import INDEX_FILE
from layerprune.surgery import remove_layers
from streaming_checks import assert_same_saved_model
from tiny_models import FAMILIES, tiny_model, tiny_model_dir, tiny_tokenizer, token_batch

MERGEABLE = [f for f in FAMILIES if f not in {"mixtral", "qwen2_moe"}]  # experts fused on load: see layers.py


def _in_memory_prune(source, output, removed) -> None:
    model, tokenizer = load_model(str(source))
    remove_layers(model, removed, method="manual")
    save_model(model, tokenizer, output)


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_prune_equals_in_memory(tmp_path, family) -> None:
    tiny_model_dir(tmp_path / "src", family)
    _in_memory_prune(tmp_path / "src", tmp_path / "memory", [1, 2])
    stream_remove(str(tmp_path / "src"), tmp_path / "streamed", [1, 2], progress=False)
    assert_same_saved_model(tmp_path / "streamed", tmp_path / "memory")


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen2_moe"])
def test_streamed_keep_of_a_pruned_model_keeps_provenance(tmp_path, family) -> None:
    tiny_model_dir(tmp_path / "src", family)
    _in_memory_prune(tmp_path / "src", tmp_path / "pruned", [0])
    model, tokenizer = load_model(str(tmp_path / "pruned"))
    remove_layers(model, [0, 2], method="manual")
    save_model(model, tokenizer, tmp_path / "memory")
    stream_keep(str(tmp_path / "pruned"), tmp_path / "streamed", [1], progress=False)
    assert_same_saved_model(tmp_path / "streamed", tmp_path / "memory")
    assert json.loads((tmp_path / "streamed" / "layerprune.json").read_text())["layer_map"] == [2]


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2", "qwen3"])
@pytest.mark.parametrize("operator", ["rdsc", "keep-last"])
def test_streamed_merge_equals_in_memory_fixed_groups(tmp_path, family, operator) -> None:
    tiny_model_dir(tmp_path / "src", family)
    model, tokenizer = load_model(str(tmp_path / "src"))
    stack = LayerStack.initial(decoder_layers(model), operator).merge(1, 3)
    apply_stack(model, stack, operator=operator)
    save_model(model, tokenizer, tmp_path / "memory")
    stream_merge(str(tmp_path / "src"), tmp_path / "streamed", [(1, 3)], operator=operator, progress=False)
    assert_same_saved_model(tmp_path / "streamed", tmp_path / "memory")


def test_sharded_input_gives_sharded_loadable_output(tmp_path) -> None:
    reference = tiny_model("llama")
    reference.save_pretrained(tmp_path / "src", max_shard_size="40KB")
    tiny_tokenizer().save_pretrained(tmp_path / "src")
    assert len(list((tmp_path / "src").glob("*.safetensors"))) > 2
    stream_remove(str(tmp_path / "src"), tmp_path / "out", [0, 3], progress=False)
    assert len(list((tmp_path / "out").glob("*.safetensors"))) > 1
    assert (tmp_path / "out" / INDEX_FILE).is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    remove_layers(reference, [0, 3])
    ids = token_batch()
    with torch.no_grad():
        assert torch.equal(reloaded(ids, use_cache=False).logits, reference(ids, use_cache=False).logits)


def test_streamed_dtype_cast_equals_in_memory(tmp_path) -> None:
    tiny_model_dir(tmp_path / "src", "llama")
    model, tokenizer = load_model(str(tmp_path / "src"))
    remove_layers(model, [3])
    save_model(model, tokenizer, tmp_path / "memory", dtype="bfloat16")
    stream_remove(str(tmp_path / "src"), tmp_path / "streamed", [3], dtype="bfloat16", progress=False)
    assert_same_saved_model(tmp_path / "streamed", tmp_path / "memory")


def test_bad_inputs_are_user_errors(tmp_path, monkeypatch) -> None:
    tiny_model("llama").save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    with pytest.raises(UserError, match="needs a local model directory"):
        stream_remove("no/such/model", tmp_path / "x", [0])
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tmp_path / "sharded" / "config.json").read_text())
    with pytest.raises(UserError, match="no safetensors"):
        stream_remove(str(pickled), tmp_path / "x", [0])
    index = json.loads((tmp_path / "sharded" / INDEX_FILE).read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / "sharded" / shard).rename(tmp_path / "sharded" / "moved.bin")
    with pytest.raises(UserError, match="not in the directory"):
        stream_remove(str(tmp_path / "sharded"), tmp_path / "x", [0])
    (tmp_path / "sharded" / "moved.bin").rename(tmp_path / "sharded" / shard)
    (tmp_path / "sharded" / "extra.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="missing from"):
        stream_remove(str(tmp_path / "sharded"), tmp_path / "x", [0])
    (tmp_path / "sharded" / "extra.safetensors").unlink()
    monkeypatch.setattr("layerprune.streaming.surgery.free_bytes", lambda path: 1000)
    with pytest.raises(UserError, match="not enough disk"):
        stream_remove(str(tmp_path / "sharded"), tmp_path / "x", [0])
    assert not (tmp_path / "x").exists()


def test_layers_not_located_by_the_architecture_entry(tmp_path) -> None:
    from safetensors.torch import save_file

    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "src")
    renamed = {name.replace("model.layers.", "model.blocks."): t.contiguous() for name, t in model.state_dict().items()}
    save_file(renamed, tmp_path / "src" / "model.safetensors")
    with pytest.raises(UserError, match="cannot locate the tensors of 4 decoder layers"):
        stream_remove(str(tmp_path / "src"), tmp_path / "x", [0])
