"""Saved directories carry the keys transformers 4.x reads (rope_theta, rope_scaling, a known tokenizer class)."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from layerprune.saving import save_model
from tiny_models import tiny_model, tiny_tokenizer, token_batch


def _saved(tmp_path, **overrides):
    model = tiny_model("llama", **overrides)
    save_model(model, tiny_tokenizer(), tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    return model, config


def test_legacy_rope_keys_equal_rope_parameters_and_reload_is_unchanged(tmp_path):
    model, config = _saved(tmp_path, rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 100000.0
    assert "rope_scaling" not in config
    tokenizer_config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager")
    assert reloaded.config.rope_parameters["rope_theta"] == 100000.0
    ids = token_batch()
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer("hello world")["input_ids"] == tiny_tokenizer()("hello world")["input_ids"]


def test_scaled_rope_is_also_written_as_rope_scaling(tmp_path):
    scaling = {"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0}
    _, config = _saved(tmp_path, rope_parameters=scaling)
    assert config["rope_theta"] == 50000.0
    assert config["rope_scaling"] == {"rope_type": "linear", "type": "linear", "factor": 2.0}
