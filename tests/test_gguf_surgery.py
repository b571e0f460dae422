"""Direct GGUF surgery on tiny GGUFs (Llama, Qwen2, Gemma-3 layouts; mixed Q4_K, Q6_K, Q5_0, Q8_0, F32)."""

from __future__ import annotations

import json

import pytest
import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM

from gguf_files import write_tiny_gguf
from layerprune.errors import UserError
from layerprune.gguf.patterns import AttentionPattern, attention_pattern, check_removal, whole_periods
from layerprune.gguf.surgery import remove_gguf_layers
from layerprune.surgery import remove_layers

CASES = [("llama", 6, [1, 4]), ("qwen2", 6, [0, 2, 5]), ("gemma3", 12, [6, 7, 8, 9, 10, 11])]


def _load(path):
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def _tensors(path):
    return {t.name: t for t in GGUFReader(path).tensors}


@pytest.mark.parametrize(("layout", "layers", "removed"), CASES, ids=[c[0] for c in CASES])
def test_kept_blocks_are_byte_equal_and_renumbered(tmp_path, layout, layers, removed):
    source = write_tiny_gguf(tmp_path / "source.gguf", layout, layers)
    summary = remove_gguf_layers(source, tmp_path / "pruned.gguf", removed)
    kept = [i for i in range(layers) if i not in removed]
    before, after = _tensors(source), _tensors(tmp_path / "pruned.gguf")
    assert len(after) == len(before) - len(removed) * sum(n.startswith("blk.0.") for n in before)
    for name, tensor in after.items():
        parts = name.split(".")
        source_name = ".".join([parts[0], str(kept[int(parts[1])]), *parts[2:]]) if parts[0] == "blk" else name
        original = before[source_name]
        assert tensor.tensor_type == original.tensor_type
        assert list(tensor.shape) == list(original.shape)
        assert tensor.data.tobytes() == original.data.tobytes()
    assert {t.tensor_type.name for t in after.values()} >= {"Q4_K", "Q6_K", "Q5_0", "Q8_0", "F32"}
    reader = GGUFReader(tmp_path / "pruned.gguf")
    assert reader.fields[f"{layout}.block_count"].contents() == layers - len(removed)
    assert reader.fields["layerprune.layer_map"].contents() == kept
    assert reader.fields["layerprune.removed_layers"].contents() == removed
    assert summary["layers"] == [layers, layers - len(removed)]


@pytest.mark.parametrize(("layout", "layers", "removed"), CASES, ids=[c[0] for c in CASES])
def test_pruned_file_reloads_in_transformers_as_the_model_with_those_layers_removed(tmp_path, layout, layers, removed):
    """16 tokens: longer than Gemma-3's 4-token window here, so a shifted sliding/full pattern would show."""
    source = write_tiny_gguf(tmp_path / "source.gguf", layout, layers)
    remove_gguf_layers(source, tmp_path / "pruned.gguf", removed)
    expected = remove_layers(_load(source), removed)
    pruned = _load(tmp_path / "pruned.gguf")
    assert pruned.config.num_hidden_layers == layers - len(removed)
    if layout == "gemma3":
        assert pruned.config.layer_types == expected.config.layer_types
    tokens = torch.arange(1, 17).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(pruned(tokens).logits, expected(tokens).logits, rtol=0, atol=1e-5)


def test_every_per_layer_array_is_sliced_and_other_keys_copied(tmp_path):
    source = write_tiny_gguf(tmp_path / "source.gguf", "llama", 6, per_layer_arrays=True)
    remove_gguf_layers(source, tmp_path / "pruned.gguf", [0, 3])
    before, after = GGUFReader(source).fields, GGUFReader(tmp_path / "pruned.gguf").fields
    for key in ("llama.attention.head_count", "llama.attention.head_count_kv", "llama.feed_forward_length"):
        values = before[key].contents()
        assert after[key].contents() == [values[i] for i in (1, 2, 4, 5)]
        assert after[key].types == before[key].types
    for key in ("tokenizer.chat_template", "general.name", "llama.rope.freq_base", "llama.context_length"):
        assert after[key].contents() == before[key].contents()
        assert after[key].types == before[key].types


def test_pruning_a_pruned_file_keeps_the_dense_source_and_composes_the_layer_map(tmp_path):
    source = write_tiny_gguf(tmp_path / "source.gguf", "llama", 6)
    remove_gguf_layers(source, tmp_path / "once.gguf", [1], {"method": "manual"})
    summary = remove_gguf_layers(tmp_path / "once.gguf", tmp_path / "twice.gguf", [2])
    fields = GGUFReader(tmp_path / "twice.gguf").fields
    assert fields["layerprune.layer_map"].contents() == [0, 2, 4, 5]
    assert fields["layerprune.removed_layers"].contents() == [1, 3]
    assert fields["layerprune.source"].contents() == "source.gguf"
    once = GGUFReader(tmp_path / "once.gguf").fields
    assert fields["layerprune.source_sha256"].contents() == once["layerprune.source_sha256"].contents()
    assert [step["removed"] for step in json.loads(fields["layerprune.steps"].contents())] == [[1], [2]]
    assert summary["removed_source_layers"] == [3]


def test_a_removal_that_shifts_gemma3s_sliding_pattern_is_refused_with_the_alternative(tmp_path):
    source = write_tiny_gguf(tmp_path / "source.gguf", "gemma3", 12)
    with pytest.raises(UserError) as caught:
        remove_gguf_layers(source, tmp_path / "pruned.gguf", [7, 8])
    message = str(caught.value)
    assert "\n" not in message
    assert "[7, 8]" in message and "every 6th layer is full attention" in message and "--layers 6-11" in message
    assert not (tmp_path / "pruned.gguf").exists()
    assert list(tmp_path.iterdir()) == [source]


def test_pattern_rule_matches_llama_cpp_set_swa_pattern():
    pattern = AttentionPattern("gemma2", 2)
    assert [pattern.kind(i) for i in range(4)] == ["sliding", "full", "sliding", "full"]
    check_removal(pattern, 8, [2, 3])
    check_removal(pattern, 8, [7])  # the last layer: nothing after it moves
    with pytest.raises(UserError, match="layer 2 \\(sliding\\) would become layer 1 \\(full\\)"):
        check_removal(pattern, 8, [1])
    check_removal(AttentionPattern("llama", 0), 8, [1])


def test_pattern_of_each_family_follows_llama_cpp():
    assert attention_pattern("gemma3", {}).period == 6
    assert attention_pattern("gemma2", {}).period == 2
    assert attention_pattern("cohere2", {}).period == 4
    assert attention_pattern("gemma3", {"gemma3.attention.sliding_window_pattern": 4}).period == 4
    assert attention_pattern("olmo2", {}).period == 0
    assert attention_pattern("olmo2", {"olmo2.attention.sliding_window": 4096}).period == 4
    assert attention_pattern("qwen2", {}).period == 0
    with pytest.raises(UserError, match="block_count is 64"):
        attention_pattern("exaone4", {})
    with pytest.raises(UserError, match="unchecked"):
        attention_pattern("mamba", {})


def test_whole_periods_follow_the_metric_and_respect_exclusions():
    order = [13, 12, 14, 15, 16, 17, 3, 2, 1, 0, 4, 5, 6, 7, 8, 9, 10, 11]
    assert whole_periods(order, 6, 6, 18) == [12, 13, 14, 15, 16, 17]
    assert whole_periods([i for i in order if i != 17], 6, 6, 18) == [11, 12, 13, 14, 15, 16]  # 17 excluded
    assert whole_periods(order, 8, 6, 18) == [12, 13, 14, 15, 16, 17]  # 8 layers hold one run of 6
    assert whole_periods(order, 12, 6, 18) == [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17]
    with pytest.raises(UserError, match="at least 6"):
        whole_periods(order, 4, 6, 18)


def test_any_run_of_whole_periods_keeps_the_pattern():
    pattern = AttentionPattern("gemma3", 6)
    for start in range(0, 7):
        check_removal(pattern, 12, list(range(start, start + 6)))
