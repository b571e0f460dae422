"""``layerprune heal``: fine-tune a pruned model (``--heal-method`` × ``--loss``) and save a plain HF model.

Example (the paper's recipe, with the lm_head untied from the embeddings)::

    layerprune heal --model pruned/ --heal-method partial --train-layers 3 --untie \\
        --data dolly --max-tokens 2000000 --output healed/

Works unchanged under ``accelerate launch -m layerprune heal ...``.
"""

from __future__ import annotations

import argparse

from accelerate import PartialState

from layerprune.cli.common import (
    add_model_arguments,
    add_output_arguments,
    console,
    export_saved,
    load_from_arguments,
)
from layerprune.healing import (
    LOSSES,
    METHODS,
    DataConfig,
    HealConfig,
    LossConfig,
    MethodConfig,
    TrainConfig,
    heal,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("heal", help="fine-tune a pruned model (LoRA, QLoRA, partial, full; ce/kd)")
    add_model_arguments(parser)
    add_heal_arguments(parser)
    add_output_arguments(parser, "the healed model")
    parser.add_argument("--save-dtype", default=None, help="dtype of the saved weights (default: keep)")
    parser.set_defaults(run=run)


def add_heal_arguments(parser: argparse.ArgumentParser) -> None:
    """Healing options, named after the recipe's ``heal`` keys; defaults come from the config dataclasses."""
    method, loss, data, train = MethodConfig(), LossConfig(), DataConfig(), TrainConfig()
    group = parser.add_argument_group("which parameters train")
    group.add_argument("--heal-method", default=method.name, help=f"one of {', '.join(METHODS.names())}")
    group.add_argument("--train-layers", type=int, default=method.train_layers, help="partial: last K layers train")
    group.add_argument("--untie", action="store_true", help="give a tied lm_head its own copy (recorded in config)")
    group.add_argument("--lora-r", type=int, default=method.lora_r)
    group.add_argument("--lora-alpha", type=int, default=method.lora_alpha)
    group.add_argument("--lora-dropout", type=float, default=method.lora_dropout)
    group.add_argument("--lora-head", action="store_true", help="lora: also train the (untied) LM head in full")
    group = parser.add_argument_group("loss")
    group.add_argument("--loss", default=loss.name, help=f"one of {', '.join(LOSSES.names())}")
    group.add_argument("--teacher", default="source", help="kd teacher: model spec or 'source' (the dense model)")
    group.add_argument("--temperature", type=float, default=loss.temperature)
    group.add_argument("--alpha", type=float, default=loss.alpha, help="ce weight in ce+kd")
    group.add_argument(
        "--hidden-weight", type=float, default=loss.hidden_weight, help="weight of the hidden-state term in kd+hidden"
    )
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        default=data.source,
        help="dolly, alpaca, oasst1, wikitext2, c4 (see `layerprune data`), a json/jsonl/parquet/txt file, or ORG/NAME",
    )
    group.add_argument("--data-format", default=data.format, help="auto, alpaca, dolly, messages, oasst or text")
    group.add_argument("--heal-seq-len", type=int, default=data.seq_len, help="cutoff length in tokens")
    group.add_argument("--packing", action="store_true", help="concatenate examples into --heal-seq-len blocks")
    group.add_argument("--validation-size", type=float, default=data.validation_size, help="fraction (<1) or count")
    group.add_argument("--max-examples", type=int, default=None, help="use at most this many training records")
    group = parser.add_argument_group("training")
    group.add_argument("--lr", type=float, default=train.learning_rate)
    group.add_argument("--train-batch-size", type=int, default=train.batch_size, help="examples per step")
    group.add_argument("--grad-accum", type=int, default=train.gradient_accumulation)
    group.add_argument("--max-steps", type=int, default=None, help="budget in optimizer steps")
    group.add_argument("--max-tokens", type=int, default=None, help="budget in input tokens (if no --max-steps)")
    group.add_argument("--epochs", type=float, default=train.epochs, help="budget if neither of the above")
    group.add_argument("--warmup", type=float, default=train.warmup, help="warm-up steps, or fraction if < 1")
    group.add_argument("--scheduler", default=train.scheduler, help="transformers scheduler name")
    group.add_argument("--eval-steps", type=int, default=train.eval_steps, help="evaluate and checkpoint every N steps")
    group.add_argument("--logging-steps", type=int, default=train.logging_steps)
    group.add_argument("--seed", type=int, default=train.seed)
    group.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    group.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    group.add_argument("--no-cache-prefix", action="store_true", help="do not cache the frozen prefix's outputs")
    group.add_argument("--cache-memory-gb", type=float, default=train.cache_memory_gb, help="else memory-mapped")
    group.add_argument("--checkpoint-dir", default=None, help="default: <output>.checkpoints")
    group.add_argument("--keep-checkpoints", action="store_true")


def heal_config_from_arguments(args: argparse.Namespace, output: str) -> HealConfig:
    return HealConfig(
        output=output,
        method=MethodConfig(
            args.heal_method,
            args.train_layers,
            args.untie,
            args.lora_r,
            args.lora_alpha,
            args.lora_dropout,
            args.lora_head,
        ),
        loss=LossConfig(args.loss, args.temperature, args.alpha, args.hidden_weight),
        data=DataConfig(
            args.data,
            args.data_format,
            args.heal_seq_len,
            args.packing,
            args.validation_size,
            args.max_examples,
            args.seed,
        ),
        train=TrainConfig(
            learning_rate=args.lr,
            batch_size=args.train_batch_size,
            gradient_accumulation=args.grad_accum,
            max_steps=args.max_steps,
            max_tokens=args.max_tokens,
            epochs=args.epochs,
            warmup=args.warmup,
            scheduler=args.scheduler,
            eval_steps=args.eval_steps,
            logging_steps=args.logging_steps,
            seed=args.seed,
            bf16=args.bf16,
            resume=args.resume,
            cache_prefix=not args.no_cache_prefix,
            cache_memory_gb=args.cache_memory_gb,
            keep_checkpoints=args.keep_checkpoints,
        ),
        teacher=args.teacher,
        checkpoint_dir=args.checkpoint_dir,
        overwrite=args.overwrite,
        save_dtype=args.save_dtype,
        cache_dir=args.cache_dir,
    )


def run(args: argparse.Namespace) -> int:
    config = heal_config_from_arguments(args, args.output)
    model, tokenizer = load_from_arguments(args)
    result = heal(model, tokenizer, config)
    if not PartialState().is_main_process:
        return 0
    report = result.summary
    console.print(f"healed with {config.method.name} / {config.loss.name}: {report['steps']} steps")
    console.print(f"examples: {report['train_examples']:,} train, {report['validation_examples']:,} validation")
    console.print(f"tokens seen: {report['tokens_seen']:,}; trainable parameters: {report['trainable_parameters']:,}")
    console.print(f"best validation loss: {report['best_validation_loss']}")
    if report["teacher"]:
        console.print(
            f"teacher {report['teacher']}: {report['teacher_bytes'] / 1e6:.1f} MB, {report['teacher_seconds']:.1f} s"
        )
    console.print(f"saved to {result.output}")
    export_saved(args, result.output)
    return 0
