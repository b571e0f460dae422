"""The sparsify stage: ``sparsify(model, tokenizer, config)`` zeroes weights, layer by layer, in place.

1. Every ``nn.Linear`` inside the decoder layers is a target (attention and MLP projections).
2. If the allocation needs statistics, one pass over the *dense* model collects each
   target's input norms ``diag(2XXᵀ/N)``; the allocation turns them (and the weights) into
   per-layer sparsities ``S_l`` whose mean is the target ``S``.
3. Layers are then pruned in order, each on the outputs of the already-pruned layers below
   (as SparseGPT and Wanda do), by the base pruner at ``S_l``.

The result is a standard dense-format model with zeros in place; ``layerprune.json``
records the allocated and achieved per-layer sparsities.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Literal

import torch
from pydantic import Field
from rich.progress import track
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.calibration import CalibrationConfig, load_calibration
from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.models.architectures import decoder_layers
from layerprune.provenance import get_provenance, record_step
from layerprune.width.layer_inputs import LayerCalls, LayerInputs, capture_layer_calls, input_hessians
from layerprune.width.prune import WIDTH_CALIBRATION, Ratio
from layerprune.width.sparse import ALLOCATIONS, SPARSE_PRUNERS, AllocationContext, Pattern, SparseRequest

NonNegative = Annotated[float, Field(ge=0)]
Pooling = Literal["pooled", "per-matrix"]
VARIANTS = ("owl_threshold", "alpha_xmin", "alpha_map", "dsa_scores", "sparsegpt_mask")


@strict_config
class SparsifyConfig:
    """Settings of the sparsify stage (the recipe's ``sparsify`` section); ``sparsity`` is the mean
    fraction of decoder-layer weights zeroed. ``dsa_*`` set DSA's search (see :mod:`.allocation_dsa`).
    Every default is the released code's; ``owl_threshold``, ``alpha_xmin``, ``alpha_map``,
    ``dsa_scores`` and ``sparsegpt_mask`` name the layerprune variants (docs/width.md)."""

    pruner: str = "wanda"
    sparsity: Ratio = 0.5
    pattern: Pattern = "unstructured"
    allocation: str = "uniform"
    owl_m: Annotated[float, Field(gt=0)] = 5.0
    owl_lambda: NonNegative = 0.08
    owl_threshold: Pooling = "pooled"
    alpha_epsilon: NonNegative = 0.3
    alpha_xmin: Literal["peak", "median"] = "peak"
    alpha_map: Literal["multiplicative", "additive"] = "multiplicative"
    damp: NonNegative = 0.01
    sparsegpt_mask: Literal["block", "row"] = "block"
    dsa_scores: Pooling = "pooled"
    dsa_function: str | None = None
    dsa_state: str | None = None
    dsa_generations: Annotated[int, Field(ge=0)] = 3
    dsa_population: Annotated[int, Field(ge=2)] = 6
    dsa_seed: int = 0
    dsa_samples: Annotated[int, Field(ge=1)] = 8
    batch_size: Annotated[int, Field(ge=1)] = 4

    def __post_init__(self) -> None:
        SPARSE_PRUNERS.get(self.pruner)
        ALLOCATIONS.get(self.allocation)
        spread = {"owl": ("owl_lambda", self.owl_lambda), "alpha": ("alpha_epsilon", self.alpha_epsilon)}
        key, value = spread.get(self.allocation, ("", None))
        if value == 0:
            raise UserError(
                f"{key} 0 makes allocation {self.allocation!r} uniform: use allocation uniform or {key} > 0"
            )
        if self.pattern == "2:4" and (self.sparsity != 0.5 or self.allocation != "uniform"):
            raise UserError("the 2:4 pattern is 50 % in every layer: use sparsity 0.5 with the uniform allocation")


@dataclass
class SparsifyResult:
    """Allocated and achieved (zero fraction of the layer's linear weights) sparsity per layer."""

    sparsities: list[float]
    achieved: list[float]
    seconds: float
    function: dict | None = None  # the DSA allocation function used, if any


def linear_targets(layer: nn.Module) -> dict[str, nn.Linear]:
    return {name: module for name, module in layer.named_modules() if isinstance(module, nn.Linear)}


def check_pattern(model: PreTrainedModel, pattern: str) -> None:
    if pattern != "2:4":
        return
    for index, layer in enumerate(decoder_layers(model)):
        for name, linear in linear_targets(layer).items():
            if linear.in_features % 4:
                raise UserError(
                    f"2:4 needs input dimensions divisible by 4; layer {index} {name} has {linear.in_features}"
                )


def sparsify(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: SparsifyConfig,
    calibration: CalibrationConfig = WIDTH_CALIBRATION,
) -> SparsifyResult:
    """Zero ``config.sparsity`` of the decoder layers' linear weights (see the module docstring),
    calibrating on ``calibration`` (DSA's fitness windows: the same source with seed + 1)."""
    check_pattern(model, config.pattern)
    if config.allocation == "dsa" and config.dsa_function is None:
        config = replace(config, dsa_function=default_function_name(model, config))
    start = time.perf_counter()
    calls = capture_layer_calls(model, load_calibration(tokenizer, calibration).batches(config.batch_size))
    context = allocation_context(model, calls, config)
    context.evaluate = _fitness(model, tokenizer, calls, config, calibration)
    sparsities = allocate(context)
    achieved = prune_layers(model, calls, sparsities, config)
    record_step(
        model,
        "sparsify",
        pruner=config.pruner,
        pattern=config.pattern,
        allocation=config.allocation,
        sparsity=config.sparsity,
        sparsities=sparsities,
        achieved=achieved,
        function=context.found_function,
        variants={name: getattr(config, name) for name in VARIANTS},
        calibration=asdict(calibration),
    )
    return SparsifyResult(sparsities, achieved, time.perf_counter() - start, context.found_function)


def default_function_name(model: PreTrainedModel, config: SparsifyConfig) -> str:
    """``<source>-<pruner>-<sparsity>``: a found DSA function is reused only for the same setting."""
    source = re.sub(r"[^a-z0-9]+", "-", str(get_provenance(model).source).lower()).strip("-")[-40:]
    return f"{source}-{config.pruner}-{config.sparsity:g}"


def prune_layers(
    model: PreTrainedModel, calls: LayerCalls, sparsities: list[float], config: SparsifyConfig
) -> list[float]:
    """Prune every decoder layer at its sparsity, in order; return the achieved zero fractions."""
    layers = decoder_layers(model)
    pruner = SPARSE_PRUNERS.get(config.pruner)
    calls = LayerCalls(list(calls.hidden), calls.kwargs)
    achieved = []
    for index in track(range(len(layers)), description=f"sparsify ({config.pruner})", transient=True):
        _prune_layer(layers[index], calls.for_layer(index), pruner, sparsities[index], config)
        calls.advance(index, layers[index])
        achieved.append(zero_fraction(layers[index]))
    return achieved


def allocation_context(model: PreTrainedModel, calls: LayerCalls, config: SparsifyConfig) -> AllocationContext:
    """Weights, and (unless the allocation is uniform) the dense model's input norms of every target."""
    layers = decoder_layers(model)
    weights = [{name: lin.weight.detach() for name, lin in linear_targets(layer).items()} for layer in layers]
    norms: list[dict[str, torch.Tensor]] = []
    if config.allocation != "uniform":
        dense = LayerCalls(list(calls.hidden), calls.kwargs)
        for index, layer in enumerate(layers):
            hessians = input_hessians(layer, linear_targets(layer), dense.for_layer(index), diagonal=True)
            norms.append({name: torch.diagonal(h) for name, h in hessians.items()})
            dense.advance(index, layer)
    return AllocationContext(weights, norms, config)


def allocate(context: AllocationContext) -> list[float]:
    config = context.config
    sparsities = ALLOCATIONS.get(config.allocation)(context)
    if not all(0 <= s < 1 for s in sparsities):
        raise UserError(f"allocation {config.allocation} gives sparsities outside [0, 1): {sparsities}; lower its λ/ε")
    return sparsities


def _fitness(model, tokenizer, calls: LayerCalls, config: SparsifyConfig, calibration: CalibrationConfig):
    """DSA's fitness: perplexity on held-out calibration windows of a copy pruned with given sparsities."""
    held = load_calibration(tokenizer, replace(calibration, seed=calibration.seed + 1, samples=config.dsa_samples))

    @torch.no_grad()
    def evaluate(sparsities: list[float]) -> float:
        trial = copy.deepcopy(model)
        prune_layers(trial, calls, sparsities, config)
        losses = [trial(input_ids=ids, labels=ids).loss for ids, _ in held.batches(config.batch_size)]
        return math.exp(float(torch.stack(losses).mean()))

    return evaluate


def _prune_layer(layer: nn.Module, inputs: LayerInputs, pruner, sparsity: float, config: SparsifyConfig) -> None:
    full = getattr(pruner, "full_hessian", False)
    hessians = input_hessians(layer, linear_targets(layer), inputs, diagonal=not full)
    for name, linear in linear_targets(layer).items():
        request = SparseRequest(
            linear.weight.data, hessians[name], sparsity, config.pattern, config.damp, config.sparsegpt_mask
        )
        linear.weight.data.copy_(pruner(request).to(linear.weight.dtype))


def zero_fraction(layer: nn.Module) -> float:
    weights = [lin.weight for lin in linear_targets(layer).values()]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
