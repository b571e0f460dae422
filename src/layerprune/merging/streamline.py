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
   * ``lm``: the next-token loss of the whole model with the new layer in place.

   Training runs through the one Trainer (:class:`~layerprune.healing.trainer.HealingTrainer`,
   so ``accelerate launch`` works) on a :class:`ReplacementModel`, minimising the healing loss
   ``mse`` or ``ce`` (:mod:`layerprune.healing.losses`): AdamW at a constant learning rate, no
   warm-up, weight decay or clipping, one step per ``batch_size`` windows in their order.

The result goes through :func:`layerprune.surgery.replace_layers`: a standard model with
``L − n`` layers whose layer ``i`` is the trained one.
"""

from __future__ import annotations

import copy
import itertools
import math
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import default_collate
from transformers import PreTrainedModel, TrainingArguments
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.execution import Bypass, capture_layer_inputs, resumed_from, substituted_layers
from layerprune.healing.data import IGNORE
from layerprune.healing.losses import LossConfig, LossInputs, hidden_mse
from layerprune.healing.trainer import HealingTrainer, TrainConfig, training_arguments
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


@dataclass
class ReplacementOutput(ModelOutput):
    """The replacement layer's output (``hidden_states[-1]``) and the frozen block's, as ``teacher``."""

    hidden_states: tuple[torch.Tensor, ...] | None = None
    teacher: ModelOutput | None = None


class ReplacementModel(nn.Module):
    """The frozen ``model`` with ``layer`` standing in for its layers ``first … last``: the Trainer's student.

    ``forward`` returns what ``objective`` computes on a batch. ``train()`` switches only the
    replacement layer's mode; the frozen model keeps its own (no dropout in frozen layers).
    """

    def __init__(self, model: PreTrainedModel, layer: nn.Module, first: int, last: int, objective: type[Objective]):
        super().__init__()
        self.model, self.layer = model, layer
        self.first, self.last, self.objective = first, last, objective

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **options: Any) -> ModelOutput:
        """The objective's outputs; the Trainer's ``options`` (``use_cache``, ``output_hidden_states``) go unused."""
        return self.objective.outputs(self, input_ids, attention_mask)

    def train(self, mode: bool = True) -> ReplacementModel:
        self.training = mode
        self.layer.train(mode)
        return self


class Objective:
    """Base: what the student computes on a batch (``outputs``) and the loss of ``LOSSES`` it minimises (``loss``)."""

    loss: str

    @staticmethod
    def outputs(student: ReplacementModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ModelOutput:
        raise NotImplementedError


TRAINING_LOSSES: Registry[type[Objective]] = Registry("streamline training loss")


@TRAINING_LOSSES.register("mse")
class BlockMSE(Objective):
    """Mean squared error between ``layer(x_first)`` and the frozen block's output ``y_last`` over real tokens.

    One frozen pass (no graph) yields the block's input and output (the teacher); the
    replacement layer then runs on that input alone, and the pass stops at its output.
    """

    loss = "mse"

    @staticmethod
    def outputs(student: ReplacementModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ModelOutput:
        model, first = student.model, student.first
        with torch.no_grad():
            block_input, target = _block_io(model, input_ids, attention_mask, first, student.last)
        with resumed_from(model, first, block_input, extra={first: student.layer}):
            prediction = block_output(model, input_ids, attention_mask, first)
        return ReplacementOutput(hidden_states=(prediction,), teacher=BaseModelOutput(hidden_states=(target,)))


@TRAINING_LOSSES.register("lm")
class LanguageModel(Objective):
    """Next-token cross-entropy (the healing loss ``ce``) of the whole model with ``layer`` in place of the block."""

    loss = "ce"

    @staticmethod
    def outputs(student: ReplacementModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ModelOutput:
        with substituted_layers(student.model, _replacement(student.layer, student.first, student.last)):
            return student.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


class Windows(torch.utils.data.Dataset):
    """Training windows as token ids (the hidden states are computed per step); padding is labelled −100."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        pairs = list(batches)
        self.input_ids = torch.cat([ids for ids, _ in pairs])
        self.attention_mask = torch.cat([mask for _, mask in pairs])

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids, mask = self.input_ids[index], self.attention_mask[index]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels_of(ids, mask)}


def labels_of(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return input_ids.masked_fill(attention_mask == 0, IGNORE)


@torch.no_grad()
def replacement_error(
    model: PreTrainedModel, layer: nn.Module, first: int, last: int, batches: Iterable[Batch]
) -> float:
    """Mean block-output MSE of ``layer`` standing in for layers ``first … last`` of ``model``."""
    student = ReplacementModel(model, layer, first, last, BlockMSE)
    errors = []
    for ids, mask in batches:
        outputs = student(ids, mask)
        errors.append(float(hidden_mse(LossInputs(outputs, labels_of(ids, mask), outputs.teacher), LossConfig("mse"))))
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
    """Train ``layer`` to stand in for layers ``first … last`` on ``batches`` with the Trainer; the loss per step.

    Only the token ids of ``batches`` are gathered (as :class:`Windows`); hidden states are computed step by step.
    """
    objective = TRAINING_LOSSES.get(config.train)
    student = ReplacementModel(model, layer, first, last, objective)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    layer.requires_grad_(True)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            trainer = HealingTrainer(
                model=student,
                args=_training_arguments(config, Path(scratch)),
                train_dataset=Windows(batches),
                data_collator=default_collate,
                loss_config=LossConfig(objective.loss),
            )
            trainer.train()
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
        layer.eval()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def _training_arguments(config: StreamlineConfig, scratch: Path) -> TrainingArguments:
    """One pass in order at a constant AdamW learning rate: no warm-up, weight decay, clipping or checkpoints."""
    train = TrainConfig(
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        warmup=0,
        scheduler="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        logging_steps=1,
        seed=config.seed,
        cache_prefix=False,
    )
    arguments = training_arguments(train, scratch, has_validation=False, checkpoints=False)
    arguments.train_sampling_strategy = "sequential"
    return arguments


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
    epochs = (
        training.batches(config.batch_size) if hasattr(training, "batches") else training()
        for _ in range(config.epochs)
    )
    losses = train_replacement(model, layer, first, last, itertools.chain.from_iterable(epochs), config)
    layers, count = decoder_layers(model), len(decoder_layers(model))
    source = get_provenance(model).layer_map
    replace_layers(model, [*layers[:first], layer, *layers[last + 1 :]], [*range(first + 1), *range(last + 1, count)])
    record_step(
        model, "replace", method="streamline", block=[source[first], source[last]], metric=config.metric,
        similarity=similarity, train=config.train, steps=len(losses), learning_rate=config.learning_rate,
        first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
    )  # fmt: skip
    return StreamlineResult(first, last, similarity, losses)
