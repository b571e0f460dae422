"""A metric, a merge and a LoRA heal step on one representative family per kind of decoder layer (issue 11).

The family matrix proves the surgery on every family; these tests prove the other stages on the
kinds of layer that differ from a plain attention block: a dense block, a MoE block (router plus
experts), a hybrid stack (linear attention next to full attention), a layer that returns a tuple,
and the text tower of a composite (multimodal) model reached through ``text_config``. Each
result is compared with its closed form, computed here from the weights or the captured states.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import nn
from transformers import TrainerCallback

from family_matrix import build
from layerprune.errors import UserError
from layerprune.execution import Bypass, substituted_layers
from layerprune.healing import DataConfig, HealConfig, LossConfig, MethodConfig, TrainConfig, heal
from layerprune.healing.methods import METHODS
from layerprune.merging.stack import LayerStack, apply_stack
from layerprune.metrics import score
from layerprune.models import decoder_layers, get_architecture, per_layer_attention_types
from metric_fixtures import calibration_of
from tiny_families import tiny_family_model
from tiny_models import tiny_tokenizer, token_batch

REPRESENTATIVES = {
    "dense": "qwen3",
    "moe": "qwen3_moe",
    "hybrid": "qwen3_next",
    "tuple": "bloom",
    "composite": "gemma4",
}
KINDS = pytest.mark.parametrize("family", list(REPRESENTATIVES.values()), ids=list(REPRESENTATIVES))


def test_the_representatives_are_of_their_kind() -> None:
    """The choice above stays meaningful: each family still has the layer kind it stands for."""
    moe = tiny_family_model(REPRESENTATIVES["moe"])
    assert any("experts" in name for name, _ in decoder_layers(moe)[0].named_modules())
    assert set(per_layer_attention_types(tiny_family_model(REPRESENTATIVES["hybrid"]))) == {
        "linear_attention",
        "full_attention",
    }
    assert get_architecture(tiny_family_model(REPRESENTATIVES["tuple"])).layer_returns_tuple
    assert get_architecture(tiny_family_model(REPRESENTATIVES["composite"])).config_path == "text_config"


@torch.no_grad()
def _layer_states(model: nn.Module, ids: torch.Tensor) -> list[torch.Tensor]:
    """Layer 0's input and every layer's output, by hooks written here (independent of ``execution``)."""
    layers = decoder_layers(model)
    states: list[torch.Tensor] = []

    def first(module, args, kwargs):
        states.append(args[0] if args else kwargs["hidden_states"])

    def output(module, args, out):
        states.append(out[0] if isinstance(out, tuple) else out)

    handles = [layers[0].register_forward_pre_hook(first, with_kwargs=True)]
    handles += [layer.register_forward_hook(output) for layer in layers]
    try:
        model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return states


@KINDS
def test_bi_equals_one_minus_the_mean_token_cosine(family: str) -> None:
    """BI_i = 1 − mean over tokens of cos(x_i, x_{i+1}) (Men et al. 2024), on states captured by hooks."""
    model = build(family)
    ids = token_batch(3, 12, seed=2)
    states = _layer_states(model, ids)
    expected = [1 - float(nn.functional.cosine_similarity(a, b, dim=-1).mean()) for a, b in itertools.pairwise(states)]
    scores = score(model, metrics=["bi"], calib=calibration_of(ids), batch_size=2).metrics["bi"]
    assert len(expected) == len(decoder_layers(model)) == 4
    assert scores.scores == pytest.approx(expected, abs=1e-5)
    assert len(set(round(value, 4) for value in expected)) > 1, "every layer scored alike"


@KINDS
def test_mean_merge_of_layers_0_and_1_is_the_parameter_average(family: str) -> None:
    """θ* = (θ_0 + θ_1) / 2 on every parameter, and the merged model computes layer 0 ← θ*, layer 1 ← bypass."""
    model = build(family)
    layers = decoder_layers(model)
    first, second = dict(layers[0].named_parameters()), dict(layers[1].named_parameters())
    stack = LayerStack.initial(layers, "mean").merge(0, 1)
    merged = stack.groups[0].module
    for name, parameter in merged.named_parameters():
        torch.testing.assert_close(parameter, (first[name] + second[name]) / 2, atol=1e-7, rtol=0, msg=name)
    ids = token_batch(2, 10, seed=3)
    with torch.no_grad(), substituted_layers(model, {0: merged, 1: Bypass()}):
        expected = model(input_ids=ids, use_cache=False).logits
    apply_stack(model, stack, method="fixed", operator="mean")
    assert len(decoder_layers(model)) == 3 and decoder_layers(model)[0] is merged
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, use_cache=False).logits, expected, atol=1e-5, rtol=0)


class _Adapters(TrainerCallback):
    """Keeps the base weights before training and the LoRA factors after it."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" not in name}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {name: p.detach().clone() for name, p in model.named_parameters()}


def test_lora_dropout_on_fused_expert_weights_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="lora_dropout 0"):
        METHODS.get("lora")().prepare(build(REPRESENTATIVES["hybrid"]), MethodConfig(name="lora", lora_dropout=0.05))


@KINDS
def test_one_lora_step_trains_only_the_adapters(family: str, tmp_path) -> None:
    """After one step the base is unchanged, loss is finite, and the merged weight is W + (α/r)·B·A (Hu et al. 2021)."""
    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"sample {i} says {i * 7 % 13} and more words" for i in range(12)))
    method = MethodConfig(name="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    config = HealConfig(
        output=str(tmp_path / "healed"),
        method=method,
        loss=LossConfig(name="ce"),
        data=DataConfig(source=str(text), seq_len=16, validation_size=2),
        train=TrainConfig(max_steps=1, batch_size=2, warmup=0, learning_rate=1e-2, logging_steps=1, eval_steps=1),
    )
    adapters = _Adapters()
    result = heal(build(family), tiny_tokenizer(bos=True), config, callbacks=[adapters])
    curve = json.loads((tmp_path / "healed" / "loss_curve.json").read_text())
    assert result.summary["steps"] == 1 and math.isfinite(curve["train"][0]["loss"])
    base = {name: p for name, p in adapters.after.items() if "lora_" not in name}
    assert base.keys() == adapters.before.keys()
    assert all(torch.equal(base[name], adapters.before[name]) for name in base), "a base weight was trained"
    healed = dict(result.model.named_parameters())
    factors = [name.removesuffix(".lora_A.default.weight") for name in adapters.after if "lora_A.default" in name]
    linear = [prefix for prefix in factors if f"{prefix}.base_layer.weight" in adapters.before]
    assert linear, "no adapter on an nn.Linear"
    for prefix in linear:  # fused expert weights (peft's ParamWrapper) are checked by the base comparison above
        lora_a, lora_b = (adapters.after[f"{prefix}.lora_{x}.default.weight"] for x in "AB")
        assert lora_b.abs().sum() > 0, f"{prefix}: B did not move"
        weight = adapters.before[f"{prefix}.base_layer.weight"]
        target = prefix.removeprefix("base_model.model.") + ".weight"
        torch.testing.assert_close(healed[target], weight + 2.0 * lora_b @ lora_a, atol=1e-6, rtol=0, msg=target)
