"""The confirmed LoRA targets of the families issue 11 names, on their tiny models (``tiny_families``).

For each family: the entry's ``lora_targets`` come from the table (``register_override``), not from
inference; every target names an ``nn.Linear`` of the decoder layers; every ``nn.Linear`` a layer has
is either a target or left out on purpose (routers, per-head gates: ``LEFT_OUT``); and layerprune's
LoRA method adapts, in every layer, exactly the layer's ``nn.Linear`` layers its targets name, except
the MLP names that peft maps onto fused experts (``PEFT_FUSED_EXPERTS``). With B = 0 the adapted model
computes the base model; with B ≠ 0 it does not (ΔW = (α/r)·B·A, Hu et al. 2021).
"""

from __future__ import annotations

import peft
import pytest
import torch
from packaging.version import Version
from torch import nn

from layerprune.healing import MethodConfig
from layerprune.healing.methods import METHODS
from layerprune.models import decoder_layers, get_architecture
from tiny_families import tiny_family_model
from tiny_models import token_batch

_ROUTERS = {"router", "gate", "shared_expert_gate"}
_GATED_DELTA = {"in_proj_a", "in_proj_b"}
_MAMBA2 = {"out_proj"}  # read as a tensor by the fused training kernel
FAMILIES = {
    "qwen3_5": _GATED_DELTA,
    "qwen3_5_text": _GATED_DELTA,
    "qwen3_5_moe": _GATED_DELTA,
    "qwen3_5_moe_text": _GATED_DELTA,
    "qwen3_next": {"in_proj_ba"},
    "gemma4": set(),
    "gemma4_text": set(),
    "llama4": set(),
    "llama4_text": set(),
    "deepseek_v3": set(),
    "deepseek_v4": {"weights_proj", "o_a_proj"},  # o_a_proj: a grouped nn.Linear subclass peft cannot wrap
    "gpt_oss": set(),
    "ministral": set(),
    "ministral3": set(),
    "olmo3": set(),
    "glm4": set(),
    "glm4_moe": set(),
    "glm4_moe_lite": set(),
    "granitemoe": set(),
    "granitemoehybrid": _MAMBA2,
    "jamba": {"dt_proj"},  # read as dt_proj.weight
    "bamba": _MAMBA2,
    "falcon_h1": _MAMBA2,
    "lfm2": set(),
    "lfm2_moe": set(),
    "nemotron_h": _MAMBA2,
}
LEFT_OUT = {family: _ROUTERS | extra for family, extra in FAMILIES.items()}
# peft 0.21 turns gate_proj/up_proj/down_proj of Qwen2-MoE-style families into target_parameters on the fused
# experts: the routed experts are adapted, the dense and shared MLPs' nn.Linear layers of those names are not.
PEFT_FUSED_EXPERTS = {"deepseek_v3", "glm4_moe", "glm4_moe_lite", "qwen3_next"}
# peft < 0.22 maps these MLP names onto the fused experts only, leaving the dense MLP and shared-expert
# nn.Linear layers of the same names unadapted; peft 0.22 adapts both (found by `setup.sh --latest`).
_MLP_NAMES = {"gate_proj", "up_proj", "down_proj"} if Version(peft.__version__) < Version("0.22") else set()


def _linear_names(layer: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in layer.named_modules() if isinstance(module, nn.Linear)}


def _adapted_linear_names(layer: nn.Module) -> set[str]:
    return {
        name.rsplit(".", 1)[-1]
        for name, module in layer.named_modules()
        if isinstance(getattr(module, "base_layer", None), nn.Linear) and hasattr(module, "lora_A")
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_confirmed_lora_targets_adapt_every_layer_kind(family: str) -> None:
    model = tiny_family_model(family)
    arch = get_architecture(model)
    assert arch.inferred and "lora_targets" in arch.confirmed, "the table's targets are not the ones used"
    targets = set(arch.lora_targets)
    layers = [_linear_names(layer) for layer in decoder_layers(model)]
    assert targets <= set().union(*layers), f"targets name no nn.Linear: {targets - set().union(*layers)}"
    for index, linear in enumerate(layers):
        assert linear - targets <= LEFT_OUT[family], f"layer {index}: {linear - targets} not targeted"
        assert linear & targets, f"layer {index} has no target"

    ids = token_batch(2, 8, seed=4)
    with torch.no_grad():
        base = model(input_ids=ids, use_cache=False).logits
    method = MethodConfig(name="lora", lora_r=2, lora_alpha=4, lora_dropout=0.0)
    adapted = METHODS.get("lora")().prepare(model, method)
    fused = _MLP_NAMES if family in PEFT_FUSED_EXPERTS else set()
    for index, layer in enumerate(decoder_layers(adapted.base_model.model)):
        assert _adapted_linear_names(layer) == (layers[index] & targets) - fused, f"layer {index}"
        if fused and hasattr(layer.mlp, "experts"):
            assert hasattr(layer.mlp.experts, "lora_A"), f"layer {index}: fused experts not adapted"
    trainable = {name: p for name, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    with torch.no_grad():
        torch.testing.assert_close(adapted(input_ids=ids, use_cache=False).logits, base, atol=0, rtol=0)
        generator = torch.Generator().manual_seed(0)
        for name, parameter in trainable.items():
            if "lora_B" in name:
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
        changed = adapted(input_ids=ids, use_cache=False).logits
    assert (changed - base).abs().max() > 1e-3, "B ≠ 0 left the logits unchanged"
