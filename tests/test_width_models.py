"""Width-pruned models: same function as the masked dense model, reload equality, KV-cache consistency."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from layerprune.calibration import CalibrationConfig, load_calibration
from layerprune.errors import UserError
from layerprune.models import decoder_layers, load_model
from layerprune.models.architectures import decoder_config, get_submodule
from layerprune.provenance import read_record
from layerprune.saving import save_model
from layerprune.width import WidthConfig, width_prune
from layerprune.width.projections import dense_width, get_layout
from layerprune.width.shrink import head_rows, shrink_layer
from model_checks import assert_cache_consistent, assert_reloads_equal
from tiny_models import tiny_model, tiny_model_dir, tiny_tokenizer, token_batch

FAMILIES = ["llama", "qwen3", "mistral", "phi3", "gemma3"]
CALIBRATION = CalibrationConfig(samples=4, seq_len=32)


@torch.no_grad()
def _masked(model, index: int, keep_groups: list[int], keep_channels: list[int]):
    """The dense model with the other KV groups' o_proj columns and the other channels' down_proj columns zeroed."""
    masked = copy.deepcopy(model)
    layout = get_layout(model)
    width, head_dim = dense_width(model)
    layer = decoder_layers(masked)[index]
    o_proj, down = get_submodule(layer, layout.o_proj), get_submodule(layer, layout.down_proj)
    drop = torch.ones(o_proj.in_features, dtype=torch.bool)
    drop[head_rows(keep_groups, width.group_size, head_dim)] = False
    o_proj.weight[:, drop] = 0
    channels = torch.ones(down.in_features, dtype=torch.bool)
    channels[keep_channels] = False
    down.weight[:, channels] = 0
    return masked


@pytest.mark.parametrize("family", FAMILIES)
def test_removing_heads_and_channels_equals_the_masked_dense_model(family):
    model = tiny_model(family)
    _, head_dim = dense_width(model)
    keep = {0: ([1], list(range(0, 64, 2))), 2: ([0], list(range(40)))}
    reference = model
    for index, (groups, channels) in keep.items():
        reference = _masked(reference, index, groups, channels)
    layers = decoder_layers(model)
    for index, (groups, channels) in keep.items():
        layers[index], _ = shrink_layer(
            layers[index], get_layout(model), decoder_config(model), head_dim, groups, channels
        )
    ids = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-5, rtol=0)
    assert get_submodule(layers[0], get_layout(model).down_proj).in_features == 32


@pytest.mark.parametrize("family", FAMILIES)
def test_uniform_width_pruned_model_reloads_with_plain_transformers(family, tmp_path):
    model = tiny_model(family)
    result = width_prune(model, tiny_tokenizer(), WidthConfig(ratio=0.3), CALIBRATION)
    assert result.uniform and result.parameters_after < result.parameters_before
    config = decoder_config(model)
    assert (config.num_key_value_heads, config.intermediate_size) == (1, result.widths[0].intermediate_size)
    reloaded = assert_reloads_equal(model, tmp_path / "m")
    assert_cache_consistent(reloaded)


@pytest.mark.parametrize("family", FAMILIES)
def test_non_uniform_width_pruned_model_reloads_via_auto_map_and_natively(family, tmp_path):
    model = tiny_model(family)
    config = WidthConfig(method="wanda", ratio=0.3, schedule="log-increase")
    result = width_prune(model, tiny_tokenizer(), config, CALIBRATION)
    assert not result.uniform
    save_model(model, tiny_tokenizer(), tmp_path / "m")
    ids = token_batch(2, 10, seed=5)
    remote = AutoModelForCausalLM.from_pretrained(tmp_path / "m", trust_remote_code=True, attn_implementation="eager")
    native, _ = load_model(str(tmp_path / "m"))
    with torch.no_grad():
        expected = model(ids).logits
        for reloaded in (remote.eval(), native):
            torch.testing.assert_close(reloaded(ids).logits, expected, atol=1e-5, rtol=0)
    assert type(remote).__name__.startswith("LayerpruneWidth")
    assert_cache_consistent(remote)
    assert_cache_consistent(native)
    step = read_record(tmp_path / "m")["steps"][-1]
    assert step["stage"] == "width" and [w["intermediate_size"] for w in step["widths"]] == [
        w.intermediate_size for w in result.widths
    ]


def test_slimgpt_compensation_beats_no_compensation_on_calibration_loss():
    """On its calibration text, SlimGPT's pruned model stays closer to the dense logits than magnitude pruning."""
    dense = tiny_model("llama")
    pruned = copy.deepcopy(dense)
    width_prune(pruned, tiny_tokenizer(), WidthConfig(ratio=0.4), CALIBRATION)
    ids = load_calibration(tiny_tokenizer(), CALIBRATION).input_ids
    with torch.no_grad():
        target = dense(ids).logits
        error = (pruned(ids).logits - target).pow(2).mean()
        magnitude = copy.deepcopy(dense)
        width_prune(magnitude, tiny_tokenizer(), WidthConfig(method="magnitude", ratio=0.4), CALIBRATION)
        assert error < (magnitude(ids).logits - target).pow(2).mean()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(ratio=1.0), "ratio: input should be less than 1"),
        (dict(ratio=0.0), "ratio: input should be greater than 0"),
        (dict(ratio=0.9), "removes all 2 KV groups"),
        (dict(method="slimgtp"), "did you mean"),
    ],
)
def test_bad_width_input_is_a_user_error(overrides, message):
    with pytest.raises(UserError, match=f"(?i){message}"):
        width_prune(tiny_model("llama"), tiny_tokenizer(), WidthConfig(**overrides), CALIBRATION)


def test_family_whose_projections_cannot_be_located_is_a_user_error(tmp_path):
    tiny_model_dir(tmp_path / "gpt2", "gpt2")
    model, tokenizer = load_model(str(tmp_path / "gpt2"))
    with pytest.raises(UserError, match="cannot locate"):
        width_prune(model, tokenizer, WidthConfig(), CALIBRATION)


@pytest.mark.parametrize("order", ["depth-then-width", "width-then-depth"])
def test_depth_and_width_combine_in_either_order(order, tmp_path):
    from layerprune.surgery import remove_layers

    model = tiny_model("qwen3")
    config = WidthConfig(ratio=0.3, schedule="log-increase")
    if order == "depth-then-width":
        remove_layers(model, [1])
        width_prune(model, tiny_tokenizer(), config, CALIBRATION)
    else:
        widths = width_prune(model, tiny_tokenizer(), config, CALIBRATION).widths
        remove_layers(model, [1])
        assert decoder_config(model).layerprune_layer_widths[1]["intermediate_size"] == widths[2].intermediate_size
    save_model(model, tiny_tokenizer(), tmp_path / "m")
    native, _ = load_model(str(tmp_path / "m"))
    ids = token_batch(2, 10, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(native(ids).logits, model(ids).logits, atol=1e-5, rtol=0)
    assert_cache_consistent(native)
    assert [s["stage"] for s in read_record(tmp_path / "m")["steps"]][-2:] == (
        ["prune", "width"] if order == "depth-then-width" else ["width", "prune"]
    )
