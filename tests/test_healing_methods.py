"""Which parameters train: partial (names and counts), untie round trip, full, LoRA merge, QLoRA on CPU."""

from __future__ import annotations

import pytest
import torch

from layerprune.errors import UserError
from layerprune.healing.methods import (
    METHODS,
    MethodConfig,
    frozen_prefix_length,
    is_tied,
    trainable_parameter_names,
    untie_lm_head,
)
from layerprune.models import load_model
from layerprune.saving import save_model
from tiny_models import VOCAB, tiny_model, tiny_tokenizer, token_batch

HIDDEN, INTERMEDIATE, KV = 32, 64, 16
LAYER = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN  # q,o + k,v + mlp + 2 norms
LAYER_TENSORS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
LAYER_TENSORS += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")


def prepare(model, **config):
    return METHODS.get(config.get("name", "partial"))().prepare(model, MethodConfig(**config))


def trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("k", [0, 2, 4])
def test_partial_trains_head_norm_and_last_k_layers(k: int) -> None:
    model = prepare(tiny_model("llama"), train_layers=k)
    expected = {"lm_head.weight", "model.norm.weight"}
    expected |= {f"model.layers.{i}.{t}.weight" for i in range(4 - k, 4) for t in LAYER_TENSORS}
    assert set(trainable_parameter_names(model)) == expected
    assert trainable_count(model) == VOCAB * HIDDEN + HIDDEN + k * LAYER
    assert frozen_prefix_length(model) == 4 - k


def test_partial_rejects_bad_k() -> None:
    with pytest.raises(UserError, match="train-layers"):
        prepare(tiny_model("llama"), train_layers=5)


def test_partial_on_tied_model_trains_the_shared_matrix_without_untie() -> None:
    model = prepare(tiny_model("llama", tie_word_embeddings=True), train_layers=1)
    assert is_tied(model)
    assert model.model.embed_tokens.weight.requires_grad
    assert frozen_prefix_length(model) == 0  # the inputs of the frozen layers change: no prefix cache
    assert trainable_count(model) == VOCAB * HIDDEN + HIDDEN + LAYER


def test_untie_gives_the_head_its_own_copy_and_round_trips(tmp_path) -> None:
    model = prepare(tiny_model("llama", tie_word_embeddings=True), train_layers=1, untie=True)
    assert not is_tied(model) and not model.config.tie_word_embeddings
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert not model.model.embed_tokens.weight.requires_grad
    assert trainable_count(model) == VOCAB * HIDDEN + HIDDEN + LAYER
    with torch.no_grad():
        model.lm_head.weight.add_(0.5)
    ids = token_batch()
    expected = model(input_ids=ids).logits
    save_model(model, tiny_tokenizer(bos=True), tmp_path / "m")
    reloaded, _ = load_model(str(tmp_path / "m"))
    assert not is_tied(reloaded)
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
    assert torch.equal(reloaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
    torch.testing.assert_close(reloaded(input_ids=ids).logits, expected)
    assert untie_lm_head(reloaded) is False


def test_full_trains_everything() -> None:
    model = prepare(tiny_model("llama"), name="full")
    assert trainable_count(model) == sum(p.numel() for p in model.parameters())


def test_lora_trains_only_adapters_and_merge_matches_unmerged(tmp_path) -> None:
    model = prepare(tiny_model("llama"), name="lora")
    names = trainable_parameter_names(model)
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    assert len(names) == 4 * 7 * 2
    in_out = 2 * (HIDDEN + HIDDEN) + 2 * (HIDDEN + KV) + 2 * (HIDDEN + INTERMEDIATE) + (INTERMEDIATE + HIDDEN)
    assert trainable_count(model) == 4 * 8 * in_out
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    model.eval()
    ids = token_batch()
    unmerged = model(input_ids=ids).logits
    base_logits = model.get_base_model()
    with model.disable_adapter():
        plain = base_logits(input_ids=ids).logits
    merged = METHODS.get("lora")().finish(model, tmp_path)
    assert not torch.allclose(unmerged, plain, atol=1e-3)
    torch.testing.assert_close(merged(input_ids=ids).logits, unmerged, atol=1e-5, rtol=1e-5)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert not any("lora" in n for n, _ in merged.named_parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_qlora_on_cpu_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="CUDA GPU"):
        prepare(tiny_model("llama"), name="qlora")


def test_unknown_method_suggests_the_closest() -> None:
    with pytest.raises(UserError, match="'lora'"):
        METHODS.get("lorra")


def test_lora_head_trains_the_untied_head_in_full_and_merges_it(tmp_path) -> None:
    with pytest.raises(UserError, match="add untie"):
        prepare(tiny_model("llama", tie_word_embeddings=True), name="lora", lora_head=True)
    model = prepare(tiny_model("llama", tie_word_embeddings=True), name="lora", lora_head=True, untie=True)
    head = [n for n in trainable_parameter_names(model) if "lora_" not in n]
    assert len(head) == 1 and "lm_head" in head[0] and "modules_to_save" in head[0]
    with torch.no_grad():
        dict(model.named_parameters())[head[0]].add_(0.5)
    model.eval()
    ids = token_batch()
    trained = model(input_ids=ids).logits
    merged = METHODS.get("lora")().finish(model, tmp_path)
    torch.testing.assert_close(merged(input_ids=ids).logits, trained, atol=1e-5, rtol=1e-5)
    assert not torch.equal(merged.lm_head.weight, merged.model.embed_tokens.weight)
