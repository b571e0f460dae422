"""Merge operators on hand-built layer weights: each equals its formula."""

import pytest
import torch

from layerprune.errors import UserError
from layerprune.merging import MERGE_OPERATORS, merge_layers
from layerprune.merging.operators import norm_parameter_names
from layerprune.models import decoder_layers
from tiny_models import tiny_model


def _layers_with_values(family: str, values: list[float]) -> list[torch.nn.Module]:
    """Layers of a tiny model whose every parameter is filled with a per-layer constant."""
    layers = list(decoder_layers(tiny_model(family)))[: len(values)]
    with torch.no_grad():
        for layer, value in zip(layers, values, strict=True):
            for param in layer.parameters():
                param.fill_(value)
    return layers


def _one_value(tensor: torch.Tensor) -> float:
    assert torch.all(tensor == tensor.flatten()[0]), "parameter is not constant"
    return float(tensor.detach().flatten()[0])


# base 1.0, others 3.0 and 7.0: rdsc = 1 + (3-1) + (7-1) = 9; mean = 11/3
@pytest.mark.parametrize(
    ("operator", "projection", "norm"),
    [("rdsc", 9.0, 9.0), ("mean", 11 / 3, 11 / 3), ("keep-last", 7.0, 1.0), ("keep-first", 1.0, 1.0)],
)
def test_operator_formula_on_every_parameter(operator: str, projection: float, norm: float) -> None:
    merged = merge_layers(_layers_with_values("qwen3", [1.0, 3.0, 7.0]), operator)
    norms = norm_parameter_names(merged)
    assert {"self_attn.q_norm.weight", "self_attn.k_norm.weight", "input_layernorm.weight"} <= norms
    for name, param in merged.named_parameters():
        assert _one_value(param) == pytest.approx(norm if name in norms else projection, abs=1e-6), name


def test_biases_follow_their_projection_and_layernorm_bias_is_a_norm() -> None:
    merged = merge_layers(_layers_with_values("gpt2", [1.0, 5.0]), "keep-last")
    params = dict(merged.named_parameters())
    assert _one_value(params["attn.c_attn.bias"]) == 5.0  # projection bias: from l+m
    assert _one_value(params["ln_1.bias"]) == 1.0  # LayerNorm bias: a norm, from l
    assert _one_value(params["ln_2.weight"]) == 1.0


def test_keep_last_equals_the_released_in_place_update() -> None:
    """LaCo/SLM code: base.proj.weight.add_(layer_k.proj.weight - base.proj.weight) for each k, on a copy."""
    model = tiny_model("llama", seed=3)
    layers = list(decoder_layers(model))
    merged = merge_layers(layers[1:4], "keep-last")
    expected = {name: p.detach().clone() for name, p in layers[1].named_parameters()}
    for other in layers[2:4]:
        for name, param in other.named_parameters():
            if "proj" in name:
                expected[name].add_(param.detach() - expected[name])
    for name, param in merged.named_parameters():
        torch.testing.assert_close(param, expected[name], rtol=0, atol=1e-7)  # x + (y − x) rounds


def test_rdsc_on_random_weights_and_inputs_untouched() -> None:
    layers = list(decoder_layers(tiny_model("llama", seed=1)))
    before = [p.detach().clone() for p in layers[0].parameters()]
    merged = merge_layers(layers[:3], "rdsc")
    name = "mlp.down_proj.weight"
    w = [dict(layer.named_parameters())[name] for layer in layers[:3]]
    torch.testing.assert_close(dict(merged.named_parameters())[name], w[0] + (w[1] - w[0]) + (w[2] - w[0]))
    for old, new in zip(before, layers[0].parameters(), strict=True):
        assert torch.equal(old, new)


def test_unknown_operator_suggests_the_closest() -> None:
    with pytest.raises(UserError, match="keep-last"):
        merge_layers(list(decoder_layers(tiny_model("llama")))[:2], "keep-lst")


def test_every_operator_is_documented() -> None:
    assert MERGE_OPERATORS.names() == ["keep-first", "keep-last", "mean", "rdsc"]
    for _, operator in MERGE_OPERATORS.items():
        assert len(operator.__doc__.strip()) > 40
