"""``heal``: fine-tune a pruned model (method × loss) and save it as a plain Hugging Face model.

Output: ``config.output`` (written atomically) holds the model, ``layerprune.json`` with a
``heal`` step (all settings, budget used, best validation loss, teacher cost, cache use),
``loss_curve.json`` and, for LoRA, the adapter in ``adapter/``. Checkpoints go to
``checkpoint_dir`` (default ``<output>.checkpoints``) so that ``resume`` can continue a
killed run; they are deleted after a successful save unless ``keep_checkpoints``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

from layerprune.errors import UserError
from layerprune.healing.data import DataConfig, HealingData, collate, load_healing_data
from layerprune.healing.losses import LOSSES, LossConfig
from layerprune.healing.methods import (
    METHODS,
    HealingMethod,
    Lora,
    MethodConfig,
    frozen_prefix_length,
    trainable_parameter_names,
)
from layerprune.healing.prefix_cache import PREFIX_CACHE_FILE, PrefixCache, build_prefix_cache
from layerprune.healing.teacher import check_vocabulary, load_teacher, prepare_teacher, teacher_bytes
from layerprune.healing.trainer import HealingTrainer, TrainConfig, budget_steps, training_arguments
from layerprune.provenance import get_provenance, record_step
from layerprune.saving import check_output_dir, save_model, terminate_raises, write_json

logger = logging.getLogger(__name__)


@dataclass
class HealConfig:
    """A healing run. ``teacher`` is a model spec or ``"source"`` (the dense model in ``layerprune.json``);
    ``cache_dir`` is where a GGUF teacher is dequantized; ``resume_advice`` is what an interrupted run
    tells the user to do (the caller knows its own command)."""

    output: str
    method: MethodConfig = field(default_factory=MethodConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher: str = "source"
    checkpoint_dir: str | None = None
    overwrite: bool = False
    save_dtype: str | None = None
    cache_dir: str | None = None
    resume_advice: str = "rerun with --resume to continue"

    def checkpoints(self) -> Path:
        return Path(self.checkpoint_dir or f"{Path(self.output)}.checkpoints")


@dataclass
class HealResult:
    model: PreTrainedModel
    output: Path
    summary: dict[str, Any]


def heal(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: HealConfig,
    teacher: PreTrainedModel | None = None,
    data: HealingData | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> HealResult:
    """Train ``model`` with ``config`` and save it to ``config.output``.

    ``teacher`` and ``data`` replace loading them from ``config``; ``callbacks`` go to the Trainer.
    """
    LOSSES.get(config.loss.name)
    method = METHODS.get(config.method.name)()
    _check_output(config)
    created = not config.checkpoints().exists()
    try:
        with terminate_raises():
            return _train_and_save(model, tokenizer, config, method, teacher, data, callbacks)
    except BaseException:
        if created:
            _discard_checkpoints(config.checkpoints(), config.resume_advice)
        raise


def _train_and_save(model, tokenizer, config: HealConfig, method, teacher, data, callbacks) -> HealResult:
    teacher = _teacher(model, config, teacher)
    data = data or load_healing_data(tokenizer, config.data, _example_budget(config.train))
    logger.warning("healing data: %d training examples, %d validation", len(data.train), len(data.validation or []))
    layer_map = list(get_provenance(model).layer_map)
    trainable = method.prepare(model, config.method)
    trainer = _build_trainer(trainable, tokenizer, config, data, teacher, layer_map)
    _check_sharding(trainer, method, config.method.name)
    for callback in callbacks or []:
        trainer.add_callback(callback)
    began = time.perf_counter()
    trainer.train(resume_from_checkpoint=_resume_point(config))
    summary = _summary(trainer, trainable, config, teacher, time.perf_counter() - began)
    state_dict = _gathered_state_dict(trainer)
    healed = method.finish(trainer.accelerator.unwrap_model(trainer.model), config.checkpoints())
    record_step(healed, "heal", **summary)
    if trainer.is_world_process_zero():
        _save(healed, tokenizer, config, trainer, state_dict)
    trainer.accelerator.wait_for_everyone()
    return HealResult(healed, Path(config.output), summary)


def _example_budget(train: TrainConfig) -> int | None:
    """Training examples a ``max_steps`` budget consumes (None: the budget is tokens or epochs)."""
    if train.max_steps is None or train.max_steps < 1:
        return None
    processes = PartialState().num_processes
    return train.max_steps * train.batch_size * train.gradient_accumulation * processes


def _is_sharded(trainer: HealingTrainer) -> bool:
    """Whether FSDP or DeepSpeed ZeRO-3 shards the parameters across processes (DDP and ZeRO-1/2 replicate them)."""
    return trainer.is_fsdp_enabled or is_deepspeed_zero3_enabled()


def _check_sharding(trainer: HealingTrainer, method: HealingMethod, name: str) -> None:
    """LoRA adapters are saved and merged from whole tensors, which FSDP and ZeRO-3 do not keep on one process."""
    if _is_sharded(trainer) and isinstance(method, Lora):
        raise UserError(
            f"--method {name} does not run under FSDP or DeepSpeed ZeRO-3; "
            "use configs/deepspeed-zero2.yaml or a plain multi-process launch, or --method partial/full"
        )


def _gathered_state_dict(trainer: HealingTrainer) -> dict[str, torch.Tensor] | None:
    """The full weights of a sharded model, gathered onto the main process (None: every process holds them).

    A collective: every process calls it. This is ``Accelerator.get_state_dict``, the call
    transformers' own ``Trainer.save_model`` makes under FSDP (full state dict) and ZeRO-3.
    """
    return trainer.accelerator.get_state_dict(trainer.model) if _is_sharded(trainer) else None


def _discard_checkpoints(directory: Path, advice: str) -> None:
    """After a failed or interrupted run: remove the checkpoint folder it created, unless it can be resumed.

    A folder holding a complete ``checkpoint-N`` is kept for ``--resume`` (minus the prefix
    cache, which is rebuilt) and reported; anything else the run wrote there is removed.
    """
    last = last_complete_checkpoint(directory)
    if last is None:
        shutil.rmtree(directory, ignore_errors=True)
        return
    (directory / PREFIX_CACHE_FILE).unlink(missing_ok=True)
    logger.warning("interrupted: kept %s; %s, or delete it", last, advice)


def _teacher(model: PreTrainedModel, config: HealConfig, given: PreTrainedModel | None) -> PreTrainedModel | None:
    if not config.loss.needs_teacher:
        return None
    if given is None:
        return load_teacher(model, config.teacher, config.cache_dir)
    check_vocabulary(model, given)
    return prepare_teacher(given)


def _check_output(config: HealConfig) -> None:
    check_output_dir(config.output, config.overwrite)
    check_output_dir(config.checkpoints(), overwrite=True)
    existing = last_complete_checkpoint(config.checkpoints())
    if existing and not (config.train.resume or config.overwrite):
        raise UserError(f"{config.checkpoints()} holds checkpoints; pass --resume to continue or --overwrite")


def last_complete_checkpoint(directory: Path) -> str | None:
    """The newest ``checkpoint-N`` whose ``trainer_state.json`` exists (the Trainer writes it last).

    A process killed while saving leaves a newer, incomplete folder; resuming from it would fail.
    """
    if not directory.is_dir():
        return None
    complete = [p for p in directory.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    complete = [p for p in complete if p.name.removeprefix("checkpoint-").isdigit()]
    return str(max(complete, key=lambda p: int(p.name.removeprefix("checkpoint-")))) if complete else None


def _resume_point(config: HealConfig) -> str | None:
    if not config.train.resume:
        return None
    last = last_complete_checkpoint(config.checkpoints())
    if last is None:
        logger.warning("--resume: no checkpoint in %s, starting from the beginning", config.checkpoints())
    return last


def _build_trainer(
    model, tokenizer, config: HealConfig, data: HealingData, teacher: PreTrainedModel | None, layer_map: list[int]
) -> HealingTrainer:
    args = training_arguments(config.train, config.checkpoints(), data.validation is not None)
    args.max_steps = budget_steps(config.train, data.train, args.world_size)
    if args.max_steps > 0:
        data = data.limited(args.max_steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size)
    return HealingTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=lambda features: collate(features, _pad_id(tokenizer)),
        loss_config=config.loss,
        teacher=teacher,
        prefix_cache=_prefix_cache(model, tokenizer, config, data),
        layer_map=layer_map,
    )


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise UserError("the tokenizer has neither a pad nor an eos token")
    return pad


def _prefix_cache(model, tokenizer, config: HealConfig, data: HealingData) -> PrefixCache | None:
    """A cache of the frozen prefix's output when there is one (partial with K < L and untied/frozen embeddings).

    Not for a loss that reads every layer's hidden state (kd+hidden): a replayed prefix has none.
    """
    if not config.train.cache_prefix or not isinstance(model, PreTrainedModel) or config.loss.reads_every_layer:
        return None
    start = frozen_prefix_length(model)
    if start == 0:
        return None
    return build_prefix_cache(
        model,
        data.all_examples(),
        start,
        batch_size=config.train.batch_size,
        pad_token_id=_pad_id(tokenizer),
        memory_budget=int(config.train.cache_memory_gb * 2**30),
        spill_dir=config.checkpoints(),
    )


def _summary(trainer: HealingTrainer, model, config: HealConfig, teacher, seconds: float) -> dict:
    state, cache = trainer.state, trainer.prefix_cache
    return {
        "settings": {key: dataclasses.asdict(getattr(config, key)) for key in ("method", "loss", "data", "train")},
        "teacher": None if teacher is None else get_provenance(teacher).source,
        "teacher_bytes": teacher_bytes(teacher),
        "teacher_seconds": round(trainer.teacher_seconds, 3),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "trainable_tensors": len(trainable_parameter_names(model)),
        "steps": state.global_step,
        "processes": trainer.args.world_size,
        "distributed_type": trainer.accelerator.distributed_type.value,
        "tokens_seen": int(state.num_input_tokens_seen),
        "train_examples": len(trainer.train_dataset),
        "validation_examples": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "best_validation_loss": state.best_metric,
        "train_seconds": round(seconds, 3),
        "cached_prefix_layers": cache.start if cache else 0,
        "cache_bytes": cache.nbytes if cache else 0,
        "cache_seconds": round(cache.build_seconds, 3) if cache else 0.0,
    }


def loss_curve(log_history: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """Training and validation loss by step, from ``Trainer.state.log_history``."""
    train = [
        {"step": e["step"], "loss": e["loss"], "learning_rate": e.get("learning_rate")}
        for e in log_history
        if "loss" in e
    ]
    validation = [{"step": e["step"], "loss": e["eval_loss"]} for e in log_history if "eval_loss" in e]
    return {"train": train, "validation": validation}


def _save(
    model: PreTrainedModel,
    tokenizer,
    config: HealConfig,
    trainer: HealingTrainer,
    state_dict: dict[str, torch.Tensor] | None,
) -> None:
    adapter = config.checkpoints() / "adapter"

    def write_extra(directory: Path) -> None:
        write_json(directory / "loss_curve.json", loss_curve(trainer.state.log_history))
        if adapter.is_dir():
            shutil.copytree(adapter, directory / "adapter")

    save_model(
        model,
        tokenizer,
        config.output,
        dtype=config.save_dtype,
        overwrite=config.overwrite,
        write_extra=write_extra,
        state_dict=state_dict,
    )
    if not config.train.keep_checkpoints:
        shutil.rmtree(config.checkpoints(), ignore_errors=True)
