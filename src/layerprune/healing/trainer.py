"""The one trainer: a transformers ``Trainer`` whose ``compute_loss`` knows the losses of :mod:`.losses`.

It heals pruned models (:mod:`layerprune.healing.heal`) and trains LLM-Streamline's
replacement layer (:mod:`layerprune.merging.streamline`). Everything else (optimizer, warm-up
and schedule, gradient accumulation, evaluation, best checkpoint by validation loss,
checkpoints and resume, progress bar, ``accelerate launch``, DeepSpeed/FSDP) is transformers'
own code, configured from :class:`TrainConfig`.
"""

from __future__ import annotations

import difflib
import math
import time
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field, field_validator
from torch import nn
from transformers import PreTrainedModel, SchedulerType, Trainer, TrainingArguments
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.execution import resumed_from
from layerprune.healing.data import TokenizedDataset
from layerprune.healing.losses import LOSSES, LossConfig, LossInputs
from layerprune.healing.prefix_cache import PrefixCache
from layerprune.models.head import chunked_head_supported, head_skipped


@strict_config
class TrainConfig:
    """Optimisation settings. The budget is ``max_steps``, else ``max_tokens`` (input tokens), else ``epochs``.

    ``warmup`` < 1 is a fraction of the steps. ``eval_steps`` is also the checkpoint interval,
    so that the best checkpoint by validation loss can be restored at the end.
    ``max_grad_norm`` clips the gradient norm (0: no clipping).
    """

    learning_rate: Annotated[float, Field(gt=0)] = 1e-4
    batch_size: Annotated[int, Field(ge=1)] = 4
    gradient_accumulation: Annotated[int, Field(ge=1)] = 1
    max_steps: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    epochs: Annotated[float, Field(gt=0)] = 1.0
    warmup: Annotated[float, Field(ge=0)] = 0.03
    scheduler: str = "cosine"
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[float, Field(ge=0)] = 1.0
    eval_steps: Annotated[int, Field(ge=1)] = 50
    logging_steps: Annotated[int, Field(ge=1)] = 10
    save_total_limit: Annotated[int, Field(ge=1)] = 2
    seed: int = 0
    bf16: bool = False
    resume: bool = False
    cache_prefix: bool = True
    cache_memory_gb: Annotated[float, Field(ge=0)] = 4.0
    keep_checkpoints: bool = False

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, name: str) -> str:
        """One of transformers' ``SchedulerType`` names (else the Trainer fails after the earlier stages ran)."""
        names = [kind.value for kind in SchedulerType]
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown learning-rate scheduler {name!r}.{hint} Valid: {', '.join(names)}")
        return name


class HealingTrainer(Trainer):
    """``Trainer`` with a loss of ``LOSSES`` (ce, kd, ce+kd, kd+hidden, mse), an optional teacher and prefix cache.

    The loss receives the student's outputs (logits and, for ``mse``, hidden states), the
    labels and the teacher's outputs. A student that runs its own teacher (LLM-Streamline's
    frozen block, which shares its input with the replacement layer) returns the teacher's
    outputs as ``outputs.teacher``; otherwise ``teacher`` is run on the batch.
    """

    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        loss_config: LossConfig,
        teacher: PreTrainedModel | None = None,
        prefix_cache: PrefixCache | None = None,
        layer_map: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.loss_config = loss_config
        self.layer_map = layer_map
        self.loss_function = LOSSES.get(loss_config.name)
        self.teacher = teacher.to(self.args.device) if teacher is not None else None
        self.prefix_cache = prefix_cache
        self.teacher_seconds = 0.0

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ModelOutput]:
        student = self.student_outputs(model, inputs)
        teacher = self.teacher_outputs(inputs, student) if self.loss_config.needs_teacher else None
        unwrapped = self.accelerator.unwrap_model(model)
        loss_inputs = LossInputs(student, inputs["labels"], teacher, unwrapped, self.layer_map)
        loss = self.loss_function(loss_inputs, self.loss_config)
        return (loss, student) if return_outputs else loss

    def model_call(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Keyword arguments of a student or teacher forward pass on ``inputs``."""
        return {
            "input_ids": inputs["input_ids"],
            "attention_mask": inputs["attention_mask"],
            "use_cache": False,
            "output_hidden_states": self.loss_config.needs_hidden_states,
        }

    def student_outputs(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        """The student's outputs; for ce, its head's input as ``head_input`` instead of logits.

        Not under FSDP, which reshards the head's weight when the forward pass ends.
        """
        unwrapped = self.accelerator.unwrap_model(model)
        chunked = self.loss_config.uses_head_input and not self.is_fsdp_enabled and chunked_head_supported(unwrapped)
        if not chunked:
            return self.student_forward(model, inputs)
        with head_skipped(unwrapped) as captured:
            outputs = self.student_forward(model, inputs)
        outputs["head_input"] = captured[-1]
        return outputs

    def student_forward(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        """The student's forward; with a prefix cache, layers below ``cache.start`` are replayed, not run."""
        if self.prefix_cache is None:
            return model(**self.model_call(inputs))
        cache = self.prefix_cache
        hidden = cache.batch(inputs["sample_index"].cpu(), inputs["input_ids"].shape[1])
        dtype = next(model.parameters()).dtype
        unwrapped = self.accelerator.unwrap_model(model)
        with resumed_from(unwrapped, cache.start, hidden.to(inputs["input_ids"].device, dtype)):
            return model(**self.model_call(inputs))

    def teacher_outputs(self, inputs: dict[str, torch.Tensor], student: ModelOutput) -> ModelOutput:
        """The student's own ``teacher`` outputs, else the teacher's, run in inference mode (no graph) and timed."""
        if student.get("teacher") is not None:
            return student["teacher"]
        if self.teacher is None:
            raise UserError(f"the {self.loss_config.name} loss needs a teacher model")
        began = time.perf_counter()
        with torch.inference_mode():
            outputs = self.teacher(**self.model_call(inputs))
        self.teacher_seconds += time.perf_counter() - began
        hidden = outputs.hidden_states
        return CausalLMOutputWithPast(
            logits=outputs.logits.clone(), hidden_states=None if hidden is None else tuple(h.clone() for h in hidden)
        )


def budget_steps(config: TrainConfig, train: TokenizedDataset, world_size: int) -> int:
    """Optimizer steps for the budget: ``max_steps``, or ``⌈max_tokens / tokens per step⌉``, or −1 (use epochs).

    Tokens per step = batch × accumulation × processes × mean example length (exact with packing).
    """
    if config.max_steps is not None:
        return config.max_steps
    if config.max_tokens is None:
        return -1
    mean_length = train.token_count() / len(train)
    per_step = config.batch_size * config.gradient_accumulation * world_size * mean_length
    return max(1, math.ceil(config.max_tokens / per_step))


def training_arguments(
    config: TrainConfig, checkpoint_dir: Path, has_validation: bool, checkpoints: bool = True
) -> TrainingArguments:
    """transformers ``TrainingArguments`` for a run (checkpoints every ``eval_steps`` unless ``checkpoints`` is off)."""
    evaluation = "steps" if has_validation else "no"
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        logging_steps=config.logging_steps,
        eval_strategy=evaluation,
        eval_steps=config.eval_steps,
        save_strategy="steps" if checkpoints else "no",
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=has_validation,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
