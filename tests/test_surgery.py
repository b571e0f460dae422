"""Surgery must give correct, reloadable models on every supported family."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from layerprune.errors import UserError
from layerprune.models import decoder_config, decoder_layers, per_layer_attention_types
from layerprune.provenance import get_provenance, read_record
from layerprune.saving import save_model
from layerprune.surgery import keep_layers, remove_layers
from tiny_families import tiny_family_model
from tiny_models import FAMILIES, tiny_model, token_batch

REMOVED = [1, 2]


def _identity_hook(module, args, kwargs, output):
    """Forward hook that makes a layer return its input: the layer is bypassed in the dense model."""
    return args[0] if args else kwargs["hidden_states"]


def _pruned(family: str):
    dense = tiny_model(family)
    return dense, remove_layers(copy.deepcopy(dense), REMOVED)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_logits_equal_dense_with_removed_layers_bypassed(family):
    dense, pruned = _pruned(family)
    handles = [decoder_layers(dense)[i].register_forward_hook(_identity_hook, with_kwargs=True) for i in REMOVED]
    ids = token_batch()
    with torch.no_grad():
        expected = dense(ids).logits
        for handle in handles:
            handle.remove()
        actual = pruned(ids).logits
        untouched = dense(ids).logits
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(actual, untouched, atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_reload_gives_equal_logits(family, tmp_path):
    _, pruned = _pruned(family)
    save_model(pruned, None, tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits, atol=1e-5, rtol=0)
    assert len(decoder_layers(reloaded)) == 2
    assert decoder_config(reloaded).num_hidden_layers == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decoding_equals_full_recompute(family):
    _, pruned = _pruned(family)
    ids = token_batch(batch=1, length=10)
    with torch.no_grad():
        full = pruned(ids, use_cache=False).logits
        out = pruned(ids[:, :4], use_cache=True)
        steps = [out.logits]
        for position in range(4, ids.shape[1]):
            out = pruned(ids[:, position : position + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generate_with_cache_equals_without(family):
    _, pruned = _pruned(family)
    prompt = token_batch(batch=1, length=5)
    settings = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = pruned.generate(prompt, use_cache=True, **settings)
        uncached = pruned.generate(prompt, use_cache=False, **settings)
    assert cached.shape[1] == prompt.shape[1] + 8
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text", "gemma3", "qwen2", "qwen3"])
def test_kept_layers_keep_their_attention_types(family, tmp_path):
    dense = tiny_model(family)
    original = per_layer_attention_types(dense)
    keep_layers(dense, [0, 3])
    assert per_layer_attention_types(dense) == [original[0], original[3]]
    assert len(set(original)) == 2, "the tiny config must mix attention types"
    save_model(dense, None, tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert per_layer_attention_types(reloaded) == [original[0], original[3]]


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_idx_is_renumbered_on_every_submodule(family):
    _, pruned = _pruned(family)
    for new_index, layer in enumerate(decoder_layers(pruned)):
        carried = [m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)]
        assert carried, "every family's attention carries a layer_idx"
        assert set(carried) == {new_index}


@pytest.mark.parametrize("family", ["gemma", "gpt2", "opt", "llama"])
def test_tied_embeddings_stay_tied_after_save_and_reload(family, tmp_path):
    dense = tiny_model(family, tie_word_embeddings=True)
    remove_layers(dense, [0])
    assert dense.get_output_embeddings().weight is dense.get_input_embeddings().weight
    save_model(dense, None, tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert reloaded.get_output_embeddings().weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()


def test_provenance_composes_over_two_prunes_and_is_saved(tmp_path):
    model = tiny_model("llama")
    remove_layers(model, [1], method="manual")
    remove_layers(model, [2], method="manual")
    assert get_provenance(model).layer_map == [0, 2]
    assert get_provenance(model).removed_layers == [1, 3]
    save_model(model, None, tmp_path / "out")
    record = read_record(tmp_path / "out")
    assert record["removed_layers"] == [1, 3]
    assert [step["removed_source_layers"] for step in record["steps"]] == [[1], [3]]
    assert record["source"] == "tiny-llama" and "torch" in record["versions"]


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([4], "out of range"),
        ([-1], "out of range"),
        ([1, 1], "more than once"),
        ([0, 1, 2, 3], "all 4"),
        (["1"], "integers"),
    ],
)
def test_bad_indices_raise_value_error(indices, message):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=message):
        remove_layers(model, indices)
    assert len(decoder_layers(model)) == 4


def test_keep_layers_rejects_keeping_none():
    with pytest.raises(UserError, match="at least one"):
        keep_layers(tiny_model("llama"), [])


def test_gpt2_inverse_layer_scaling_is_refused():
    model = tiny_model("gpt2", scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(UserError, match="scale_attn_by_inverse_layer_idx"):
        remove_layers(model, [0])


def test_layer_index_lists_are_renumbered_not_sliced():
    model = tiny_model("qwen2_moe")
    assert model.config.mlp_only_layers == [1, 3]
    remove_layers(model, [0, 1])
    assert model.config.mlp_only_layers == [1], "source layer 3 is now layer 1; source layer 1 is gone"


def test_any_list_as_long_as_the_layer_count_is_sliced():
    model = tiny_model("smollm3")
    remove_layers(model, [1])
    assert model.config.no_rope_layers == [1, 1, 1]
    assert model.config.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]


def test_model_copies_of_renumbered_lists_follow_the_config():
    """Mllama's text model reads its own copy of cross_attention_layers, not the config's."""
    model = tiny_family_model("mllama")
    assert model.model.cross_attention_layers[0] == 3, "layer 3 of 4 attends to the image"
    remove_layers(model, [1, 2])
    assert model.model.cross_attention_layers == model.config.cross_attention_layers == [1]
