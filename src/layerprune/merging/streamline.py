"""LLM-Streamline (Chen et al., 2024, "Compressing Large Language Models by Streamlining the Unimportant Layer").

1. **Choose the block.** For every run of ``n + 1`` consecutive layers ``i … i+n``, compare
   the hidden state entering layer ``i`` with the one leaving layer ``i+n``, per real token,
   over the calibration data: ``cosine`` (mean cos, highest wins; the paper's choice) or
   ``angular`` (mean arccos(cos)/π, lowest wins; Gromov et al.'s distance).
2. **Replace it** with one decoder layer initialised from the block's first layer ``i``.
3. **Train that layer** (everything else frozen) with

   * ``mse``: ‖f(x_i) − y_{i+n}‖² against the frozen model's block output; the pair
     ``(x_i, y_{i+n})`` is computed batch by batch and dropped after the step, so memory does
     not grow with the amount of training data (the released code caches every pair in RAM);
   * ``lm``: the next-token loss of the whole model with the new layer in place (streamed
     the same way). This is a plain loop here, not the Healing trainer (whose branch could
     not be merged cleanly at the time of writing).

The result goes through :func:`layerprune.surgery.replace_layers`: a standard model with
``L − n`` layers whose layer ``i`` is the trained one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated

import torch
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.execution import Bypass, capture_layer_inputs, resumed_from, substituted_layers
from layerprune.merging.candidates import Batch, as_batches, decoder_stack
from layerprune.models import decoder_layers, final_norm
from layerprune.provenance import get_provenance, record_step
from layerprune.registry import Registry
from layerprune.surgery import replace_layers


@strict_config
class StreamlineConfig:
    """Remove ``num_layers`` (n): a block of n + 1 layers becomes one trained layer.

    ``final_norm``: compare a block that ends at the last layer with the last state *after*
    the final norm, as the released code does (it reads ``output_hidden_states``, whose last
    entry is normed). By default every state is taken before the norm, so the top block is
    compared on the same scale as the others.
    """

    num_layers: Annotated[int, Field(ge=1)] = 1
    metric: str = "cosine"
    train: str = "mse"
    epochs: Annotated[int, Field(ge=1)] = 1
    learning_rate: Annotated[float, Field(gt=0)] = 1e-4
    batch_size: Annotated[int, Field(ge=1)] = 4
    seed: int = 0
    final_norm: bool = False
    data: str = "default"
    """Training text for the replacement layer (any calibration source); drawn with ``seed + 1``."""
    train_samples: Annotated[int, Field(ge=1)] = 64


@dataclass
class StreamlineResult:
    """The replaced block (input-model numbering), its similarity, and the training losses per step."""

    first: int
    last: int
    similarity: float
    losses: list[float] = field(default_factory=list)


BLOCK_METRICS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("block metric")


@BLOCK_METRICS.register("cosine")
def block_cosine(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Per-token cos(x_i, y_{i+n}); higher = the block changes less (LLM-Streamline's choice)."""
    return nn.functional.cosine_similarity(inputs.double(), outputs.double(), dim=-1)


@BLOCK_METRICS.register("angular")
def block_angular(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Per-token −arccos(cos(x_i, y_{i+n}))/π (negated angular distance, so higher is again better)."""
    return -torch.arccos(block_cosine(inputs, outputs).clamp(-1, 1)) / math.pi


@torch.no_grad()
def choose_block(
    model: PreTrainedModel, batches: Iterable[Batch], n: int, metric: str, normed_top: bool = False
) -> tuple[int, float]:
    """First layer of the n+1-layer block whose input and output are most alike, with the mean score.

    Block ``i … i+n`` compares ``x_i`` (the state entering layer i) with ``y_{i+n} = x_{i+n+1}``
    (the state leaving layer i+n). ``normed_top`` applies the final norm to the last state
    (see :class:`StreamlineConfig`).
    """
    score = BLOCK_METRICS.get(metric)
    count = len(decoder_layers(model))
    if not 1 <= n < count:
        raise UserError(f"cannot replace {n + 1} of {count} layers by one")
    norm = final_norm(model) if normed_top else None
    totals, tokens = torch.zeros(count - n, dtype=torch.float64), 0
    for ids, mask in batches:
        states, keep = capture_layer_inputs(model, ids, mask), mask.bool()
        if norm is not None:
            states[-1] = norm(states[-1])
        for first in range(count - n):
            totals[first] += score(states[first][keep], states[first + n + 1][keep]).sum()
        tokens += int(keep.sum())
    means = totals / tokens
    best = int(means.argmax())
    return best, float(means[best])


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the needed layer output exists."""


def block_output(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, last: int) -> torch.Tensor:
    """Output of layer ``last`` (the forward stops there); gradients flow if enabled."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, output) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = decoder_layers(model)[last].register_forward_hook(hook)
    try:
        decoder_stack(model)(input_ids=ids, attention_mask=mask, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


LossFunction = Callable[[PreTrainedModel, nn.Module, int, int, Batch], torch.Tensor]
TRAINING_LOSSES: Registry[LossFunction] = Registry("streamline training loss")


@TRAINING_LOSSES.register("mse")
def mse_loss(model: PreTrainedModel, layer: nn.Module, first: int, last: int, batch: Batch) -> torch.Tensor:
    """Mean squared error between ``layer(x_first)`` and the frozen block's output ``y_last`` over real tokens."""
    ids, mask = batch
    with torch.no_grad():
        states = _block_io(model, ids, mask, first, last)
    with resumed_from(model, first, states[0], extra={first: layer}):
        prediction = block_output(model, ids, mask, first)
    keep = mask.bool()
    return nn.functional.mse_loss(prediction[keep], states[1][keep])


@TRAINING_LOSSES.register("lm")
def lm_loss(model: PreTrainedModel, layer: nn.Module, first: int, last: int, batch: Batch) -> torch.Tensor:
    """Next-token cross-entropy of the whole model with ``layer`` in place of the block (padding ignored)."""
    ids, mask = batch
    with substituted_layers(model, _replacement(layer, first, last)):
        return model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss


@torch.no_grad()
def replacement_error(
    model: PreTrainedModel, layer: nn.Module, first: int, last: int, batches: Iterable[Batch]
) -> float:
    """Mean block-output MSE of ``layer`` standing in for layers ``first … last`` of ``model``."""
    errors = [float(mse_loss(model, layer, first, last, batch)) for batch in batches]
    return sum(errors) / len(errors)


def _block_io(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, first: int, last: int):
    """(input of layer ``first``, output of layer ``last``) of the frozen model for one batch."""
    captured: list[torch.Tensor] = []
    handle = decoder_layers(model)[first].register_forward_pre_hook(
        lambda module, args, kwargs: captured.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
    )
    try:
        output = block_output(model, ids, mask, last)
    finally:
        handle.remove()
    return captured[0], output


def _replacement(layer: nn.Module, first: int, last: int) -> dict[int, nn.Module]:
    return {first: layer, **{index: Bypass() for index in range(first + 1, last + 1)}}


def train_replacement(
    model: PreTrainedModel, layer: nn.Module, first: int, last: int, batches: Iterable[Batch], config: StreamlineConfig
) -> list[float]:
    """Train ``layer`` to stand in for layers ``first … last`` on ``batches`` (consumed lazily); losses per step."""
    loss_of = TRAINING_LOSSES.get(config.train)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    layer.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=config.learning_rate, weight_decay=0.0)
    losses = []
    try:
        for batch in tqdm(batches, desc=f"streamline ({config.train})", unit="batch", leave=False):
            loss = loss_of(model, layer, first, last, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
        layer.eval()
    return losses


def replace_block(
    model: PreTrainedModel,
    selection: object,
    training: object,
    config: StreamlineConfig,
) -> StreamlineResult:
    """Choose the block on ``selection``, train its replacement on ``training``, install it by surgery.

    ``selection`` is a :class:`~layerprune.calibration.CalibrationSet` or a sequence of
    ``(input_ids, attention_mask)`` batches; ``training`` is a ``CalibrationSet`` (cut into
    ``config.batch_size`` windows per step) or a callable returning one epoch's batches.
    """
    torch.manual_seed(config.seed)
    selection_batches = as_batches(selection, config.batch_size)
    first, similarity = choose_block(model, selection_batches, config.num_layers, config.metric, config.final_norm)
    last = first + config.num_layers
    layer = copy.deepcopy(decoder_layers(model)[first])
    losses = []
    for _ in range(config.epochs):
        epoch = training.batches(config.batch_size) if hasattr(training, "batches") else training()
        losses += train_replacement(model, layer, first, last, epoch, config)
    layers, count = decoder_layers(model), len(decoder_layers(model))
    source = get_provenance(model).layer_map
    replace_layers(model, [*layers[:first], layer, *layers[last + 1 :]], [*range(first + 1), *range(last + 1, count)])
    record_step(
        model, "replace", method="streamline", block=[source[first], source[last]], metric=config.metric,
        similarity=similarity, train=config.train, steps=len(losses), learning_rate=config.learning_rate,
        first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
    )  # fmt: skip
    return StreamlineResult(first, last, similarity, losses)
