"""The width stage: ``width_prune(model, tokenizer, config)`` removes heads and FFN channels layer by layer.

Layers are pruned in order, and each layer's calibration inputs are the outputs of the
already-pruned layers below it (as in SparseGPT and SlimGPT). Per layer:

1. attention: the Hessian of ``o_proj``'s inputs scores the KV groups; the method removes
   ``g_i`` of them (and compensates ``o_proj``);
2. FFN: with the pruned attention in place, the Hessian of ``down_proj``'s inputs scores
   the channels; the method removes ``c_i`` of them (and compensates ``down_proj``);
3. the layer is rebuilt narrower (:mod:`layerprune.width.shrink`) and run again to give
   the next layer's inputs.

**Per-layer ratio.** ``r_i`` is the fraction of the layer's attention + MLP projection
parameters removed: ``g_i = round(r_i · G)`` whole KV groups, then as many channels as
make up the rest of ``r_i`` of the layer's parameters. SlimGPT applies ``r_i`` to heads and
channels separately; with few KV groups (SmolLM2-135M has 3) that cannot hit a parameter
target, while this rule does.

**GQA.** Heads are removed in whole KV groups (a KV head with all query heads that read it).
The group structure stays valid for any count, the KV cache and k/v projections shrink with
the queries (the decode-time saving), and multi-head attention is the case of groups of
one. Removing equal numbers of query heads per group would keep every KV head and so keep
the KV cache at full size.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Annotated, Literal, get_args

import torch
from pydantic import Field
from rich.progress import track
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.calibration import CalibrationConfig, load_calibration
from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.models.architectures import decoder_config, decoder_layers, get_submodule
from layerprune.provenance import record_step
from layerprune.width.base import WIDTH_METHODS, ColumnRequest
from layerprune.width.heterogeneous import WIDTHS_KEY
from layerprune.width.layer_inputs import LayerInputs, capture_layer_calls, input_hessians
from layerprune.width.projections import LayerWidth, dense_width, get_layout
from layerprune.width.schedule import layer_ratios
from layerprune.width.shrink import layer_width, shrink_layer

Schedule = Literal["uniform", "log-increase"]
SCHEDULES = get_args(Schedule)
HeadScore = Literal["released", "exact"]
ChannelBatches = Literal["released", "halving"]
Ratio = Annotated[float, Field(gt=0, lt=1)]
WIDTH_CALIBRATION = CalibrationConfig(samples=32)
"""The calibration a width or sparsify call uses when none is given (a recipe's ``calibration`` section replaces it)."""


@strict_config
class WidthConfig:
    """Settings of the width stage (the recipe's ``width`` section); ``ratio`` is the mean fraction of
    layer parameters removed. ``log-increase`` solves the bound not given from ``ratio``.
    ``head_score`` and ``channel_batches`` choose SlimGPT's released steps or the project's
    variants (see :func:`layerprune.width.slimgpt.slimgpt`)."""

    method: str = "slimgpt"
    ratio: Ratio = 0.2
    schedule: Schedule = "uniform"
    min_ratio: Annotated[float, Field(ge=0, lt=1)] | None = None
    max_ratio: Ratio | None = None
    damp: Annotated[float, Field(ge=0)] = 0.01
    batch_size: Annotated[int, Field(ge=1)] = 4
    head_score: HeadScore = "released"
    channel_batches: ChannelBatches = "released"

    def __post_init__(self) -> None:
        WIDTH_METHODS.get(self.method)
        given = {k: v for k, v in (("min_ratio", self.min_ratio), ("max_ratio", self.max_ratio)) if v is not None}
        if given and self.schedule != "log-increase":
            key = next(iter(given))
            raise UserError(f"{key} {given[key]} shapes a log-increase schedule, but schedule is {self.schedule!r}")
        if len(given) == 2 and self.min_ratio > self.max_ratio:
            raise UserError(
                f"min_ratio {self.min_ratio} is above max_ratio {self.max_ratio}: log-increase grows from min to max"
            )
        if len(given) == 2:
            raise UserError(
                f"min_ratio {self.min_ratio} and max_ratio {self.max_ratio} fix the schedule's mean, so ratio "
                f"{self.ratio} would be ignored: give ratio with at most one bound (the other is solved for)"
            )


@dataclass
class WidthResult:
    """Per-layer ratios asked for, widths obtained, parameter counts and wall time."""

    ratios: list[float]
    widths: list[LayerWidth]
    parameters_before: int
    parameters_after: int
    seconds: float

    @property
    def uniform(self) -> bool:
        return len(set(self.widths)) == 1


def plan_layer(width: LayerWidth, head_dim: int, hidden: int, ratio: float, index: int) -> tuple[int, int]:
    """(KV groups, channels) to remove so the layer loses ``ratio`` of its projection parameters."""
    group = hidden * head_dim * (2 * width.group_size + 2)
    channel = 3 * hidden
    total = width.num_key_value_heads * group + width.intermediate_size * channel
    groups = round(ratio * width.num_key_value_heads)
    channels = max(0, round((ratio * total - groups * group) / channel))
    if groups >= width.num_key_value_heads:
        raise UserError(
            f"ratio {ratio:.3f} removes all {width.num_key_value_heads} KV groups of layer {index}; use a smaller ratio"
        )
    if channels >= width.intermediate_size:
        raise UserError(f"ratio {ratio:.3f} removes all FFN channels of layer {index}; use a smaller ratio")
    return groups, channels


def plan_widths(model: PreTrainedModel, config: WidthConfig) -> tuple[list[float], list[tuple[int, int]]]:
    """Per-layer ratios and (KV groups, channels) to remove; a plan that removes nothing is a :class:`UserError`."""
    layout, hidden = get_layout(model), decoder_config(model).hidden_size
    _, head_dim = dense_width(model)
    layers = decoder_layers(model)
    ratios = layer_ratios(len(layers), config.schedule, config.ratio, config.min_ratio, config.max_ratio)
    plans = [
        plan_layer(layer_width(layer, layout, head_dim), head_dim, hidden, r, i)
        for i, (layer, r) in enumerate(zip(layers, ratios, strict=True))
    ]
    if not any(groups or channels for groups, channels in plans):
        raise UserError(
            f"width ratio {config.ratio} removes nothing: per-layer ratios up to {max(ratios):.4f} round to "
            "0 KV groups and 0 FFN channels in every layer of this model; choose a larger ratio"
        )
    return ratios, plans


def width_prune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: WidthConfig,
    calibration: CalibrationConfig = WIDTH_CALIBRATION,
) -> WidthResult:
    """Remove heads and FFN channels from every decoder layer in place (see the module docstring),
    calibrating on ``calibration``."""
    ratios, plans = plan_widths(model, config)
    text_config = decoder_config(model)
    _, head_dim = dense_width(model)
    layers = decoder_layers(model)
    start, before = time.perf_counter(), sum(p.numel() for p in model.parameters())
    inputs = capture_layer_calls(model, load_calibration(tokenizer, calibration).batches(config.batch_size))
    widths = []
    for index in track(range(len(layers)), description=f"width ({config.method})"):
        layer_inputs = inputs.for_layer(index)
        layers[index], width = _prune_layer(layers[index], layer_inputs, text_config, head_dim, plans[index], config)
        inputs.advance(index, layers[index])
        widths.append(width)
    _write_widths(text_config, widths, head_dim)
    result = WidthResult(
        ratios, widths, before, sum(p.numel() for p in model.parameters()), time.perf_counter() - start
    )
    record_step(
        model,
        "width",
        method=config.method,
        schedule=config.schedule,
        ratios=ratios,
        widths=[asdict(w) for w in widths],
        damp=config.damp,
        head_score=config.head_score,
        channel_batches=config.channel_batches,
        calibration=asdict(calibration),
    )
    return result


def _prune_layer(
    layer: nn.Module, inputs: LayerInputs, text_config, head_dim: int, plan: tuple[int, int], config: WidthConfig
):
    layout = get_layout(text_config)
    width = layer_width(layer, layout, head_dim)
    o_proj, down_proj = get_submodule(layer, layout.o_proj), get_submodule(layer, layout.down_proj)
    groups = torch.arange(o_proj.in_features).reshape(width.num_key_value_heads, -1)
    removed_groups = _prune_columns(layer, o_proj, inputs, groups, plan[0], "heads", config)
    channels = torch.arange(down_proj.in_features).reshape(-1, 1)
    removed_channels = _prune_columns(layer, down_proj, inputs, channels, plan[1], "channels", config)
    keep_groups = [g for g in range(width.num_key_value_heads) if g not in set(removed_groups)]
    keep_channels = [c for c in range(width.intermediate_size) if c not in set(removed_channels)]
    return shrink_layer(layer, layout, text_config, head_dim, keep_groups, keep_channels)


def _prune_columns(
    layer: nn.Module,
    linear: nn.Linear,
    inputs: LayerInputs,
    groups: torch.Tensor,
    count: int,
    kind: str,
    config: WidthConfig,
) -> list[int]:
    """Collect ``linear``'s input Hessian, let the method choose ``count`` groups, write the new weight."""
    if count == 0:
        return []
    hessian = input_hessians(layer, {"linear": linear}, inputs)["linear"]
    weight = linear.weight.data.to(torch.float64)
    request = ColumnRequest(
        weight, hessian, groups, count, kind, config.damp, config.head_score, config.channel_batches
    )
    removed, weight = WIDTH_METHODS.get(config.method)(request)
    linear.weight.data.copy_(weight.to(linear.weight.dtype))
    return removed


def _write_widths(config, widths: list[LayerWidth], head_dim: int) -> None:
    """Uniform widths go into the standard config keys; otherwise into ``layerprune_layer_widths``."""
    config.head_dim = head_dim
    if len(set(widths)) == 1:
        config.num_attention_heads = widths[0].num_attention_heads
        config.num_key_value_heads = widths[0].num_key_value_heads
        config.intermediate_size = widths[0].intermediate_size
        setattr(config, WIDTHS_KEY, None)
    else:
        setattr(config, WIDTHS_KEY, [asdict(w) for w in widths])
