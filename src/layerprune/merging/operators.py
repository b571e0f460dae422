"""Merge operators: fuse a base decoder layer ``l`` and the layers ``l+1 … l+m`` into one layer.

Every operator is applied parameter by parameter to layers of identical structure. Each
parameter is classified once, generically (no per-family lists), as

* a **norm** parameter: weight or bias of a module whose class name contains ``Norm``
  (``LlamaRMSNorm``, ``nn.LayerNorm``, Qwen3's ``q_norm``/``k_norm``, Gemma's extra
  pre/post-feed-forward norms, GPT-2's ``ln_1``/``ln_2``, …), or
* a **projection** parameter: everything else, i.e. the weights *and biases* of the
  linear maps (``q_proj``, ``gate_up_proj``, GPT-2's ``Conv1D`` ``c_attn``, …). A bias is
  treated like the weight of the map it belongs to.

Each operator states what it does with both kinds. ``rdsc`` and ``mean`` are affine in the
parameters and commute with the ``1 + w`` parameterisation of Gemma's RMSNorm, so the
norm rule means the same thing for every family. Arithmetic is done in float32 and cast
back to the parameter's dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from layerprune.errors import UserError
from layerprune.registry import Registry

MergeOperator = Callable[[torch.Tensor, list[torch.Tensor], bool], torch.Tensor]
MERGE_OPERATORS: Registry[MergeOperator] = Registry("merge operator")


@MERGE_OPERATORS.register("rdsc")
def rdsc(base: torch.Tensor, others: list[torch.Tensor], is_norm: bool) -> torch.Tensor:
    """LaCo's Reserving-Differences-while-Seeking-Common (Yang et al., 2024, Eq. 2).

    θ* = θ_l + Σ_{k=1..m} (θ_{l+k} − θ_l), on every parameter (projections, their biases and
    norms alike), as the paper's formula states. The released LaCo and SLM code instead
    update the base in place, which yields ``keep-last`` (see there).
    """
    return base + sum((other - base for other in others), torch.zeros_like(base))


@MERGE_OPERATORS.register("mean")
def mean(base: torch.Tensor, others: list[torch.Tensor], is_norm: bool) -> torch.Tensor:
    """Parameter average: θ* = (θ_l + Σ_k θ_{l+k}) / (m + 1), on every parameter including norms."""
    return torch.stack([base, *others]).mean(dim=0)


@MERGE_OPERATORS.register("keep-last")
def keep_last(base: torch.Tensor, others: list[torch.Tensor], is_norm: bool) -> torch.Tensor:
    """Projections (and their biases) of layer l+m, norms of layer l.

    This is what both released codes (LaCo, SLM) compute: they run
    ``base.proj.weight.add_(layer_k.proj.weight − base.proj.weight)`` for k = l+1 … l+m on the
    *already updated* base, so after the loop θ_base = θ_{l+m}; they touch only the
    projection weights, so the norms stay those of layer l. Neither the RDSC formula nor a mean.
    """
    return base.clone() if is_norm or not others else others[-1].clone()


@MERGE_OPERATORS.register("keep-first")
def keep_first(base: torch.Tensor, others: list[torch.Tensor], is_norm: bool) -> torch.Tensor:
    """Keep layer l unchanged (projections and norms) and drop l+1 … l+m: deletion of the rest."""
    return base.clone()


def norm_parameter_names(layer: nn.Module) -> set[str]:
    """Names (relative to ``layer``) of the parameters that belong to normalisation modules."""
    names = set()
    for module_name, module in layer.named_modules():
        if "norm" in type(module).__name__.lower():
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + name for name, _ in module.named_parameters(recurse=False))
    return names


@torch.no_grad()
def merge_layers(layers: Sequence[nn.Module], operator: str | MergeOperator) -> nn.Module:
    """One new layer from ``layers[0]`` (the base l) and ``layers[1:]`` (l+1 … l+m); inputs are untouched.

    The result is a copy of the base (so buffers and ``layer_idx`` come from l) whose
    parameters are ``operator(θ_l, [θ_{l+1}, …], is_norm)``.
    """
    combine = MERGE_OPERATORS.get(operator) if isinstance(operator, str) else operator
    base, others = layers[0], list(layers[1:])
    merged = copy.deepcopy(base)
    norms = norm_parameter_names(base)
    other_parameters = [_parameters_like(base, other) for other in others]
    for name, parameter in merged.named_parameters():
        result = combine(parameter.float(), [params[name].float() for params in other_parameters], name in norms)
        parameter.copy_(result.to(parameter.dtype))
    return merged


def _parameters_like(base: nn.Module, other: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(other.named_parameters())
    expected = {name: p.shape for name, p in base.named_parameters()}
    if {name: p.shape for name, p in params.items()} != expected:
        raise UserError(f"cannot merge layers of different structure: {type(base).__name__} vs {type(other).__name__}")
    return params
