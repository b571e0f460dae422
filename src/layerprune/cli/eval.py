"""``layerprune eval``: zero-shot tasks, perplexity and speed of one model, written as results JSON."""

from __future__ import annotations

import argparse
from functools import partial

from layerprune.cli.common import add_model_arguments, add_output_file_argument, console, load_from_arguments
from layerprune.errors import UserError
from layerprune.evaluation import EvalConfig, HarnessOptions, PerplexityOptions, SpeedOptions, evaluate
from layerprune.evaluation.results import results_table, write_results
from layerprune.evaluation.runner import load_source


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model: lm-eval tasks, perplexity, speed")
    add_model_arguments(parser)
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=[],
        help="lm-eval task names and/or presets paper8, zeroshot7 (comma or space separated)",
    )
    parser.add_argument("--limit", type=int, default=HarnessOptions.limit, help="first N examples per task")
    parser.add_argument("--harness-batch-size", type=int, default=HarnessOptions.batch_size, help="lm-eval batch")
    parser.add_argument("--num-fewshot", type=int, default=HarnessOptions.num_fewshot)
    parser.add_argument("--backend", default=HarnessOptions.backend, help="lm-eval backend: hf or vllm (needs vllm)")
    parser.add_argument("--device", default=EvalConfig.device, help="e.g. cpu or cuda:0 (default: where it loads)")
    parser.add_argument(
        "--data-dir",
        default=EvalConfig.data_dir,
        help="a data folder searched before $LAYERPRUNE_DATA and the embedded slices (see `layerprune data`)",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="skip tasks that have no local files while the Hub is off (recorded in the results)",
    )
    parser.add_argument("--ppl", nargs="+", default=[], help="wikitext2, c4, ptb or a text file (comma or space)")
    parser.add_argument(
        "--ppl-seq-len", type=int, default=PerplexityOptions.seq_len, help="perplexity window length in tokens"
    )
    parser.add_argument(
        "--ppl-windows",
        type=int,
        default=PerplexityOptions.max_windows,
        help="score only the first N perplexity windows (default: all)",
    )
    parser.add_argument("--speed", action="store_true", help="measure speed and memory (and the source's)")
    parser.add_argument("--speed-batch", type=int, default=SpeedOptions.batch_size)
    parser.add_argument("--prompt-len", type=int, default=SpeedOptions.prompt_len)
    parser.add_argument("--decode-tokens", type=int, default=SpeedOptions.decode_tokens)
    parser.add_argument("--repeats", type=int, default=SpeedOptions.repeats)
    parser.add_argument("--seed", type=int, default=EvalConfig.seed)
    add_output_file_argument(parser, "the results")
    parser.set_defaults(run=run)


def split_names(values: list[str]) -> list[str]:
    """``["a,b", "c"]`` → ``["a", "b", "c"]``."""
    return [name for value in values for name in value.split(",") if name]


def build_config(args: argparse.Namespace) -> EvalConfig:
    """The :class:`EvalConfig` the arguments describe; nothing to do is a :class:`UserError`."""
    tasks, ppl = split_names(args.tasks), split_names(args.ppl)
    if not (tasks or ppl or args.speed):
        raise UserError("nothing to evaluate: give --tasks, --ppl and/or --speed")
    limits = (
        ("--limit", args.limit),
        ("--harness-batch-size", args.harness_batch_size),
        ("--ppl-seq-len", args.ppl_seq_len),
    )
    for name, value in limits:
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1")
    speed = (
        SpeedOptions(
            batch_size=args.speed_batch,
            prompt_len=args.prompt_len,
            decode_tokens=args.decode_tokens,
            repeats=args.repeats,
            seed=args.seed,
        )
        if args.speed
        else None
    )
    return EvalConfig(
        tasks=tasks,
        ppl=ppl,
        speed=speed,
        data_dir=args.data_dir,
        device=args.device,
        seed=args.seed,
        harness=HarnessOptions(
            limit=args.limit,
            batch_size=args.harness_batch_size,
            num_fewshot=args.num_fewshot,
            skip_missing=args.skip_missing,
            backend=args.backend,
        ),
        perplexity=PerplexityOptions(seq_len=args.ppl_seq_len, max_windows=args.ppl_windows),
    )


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    model, tokenizer = load_from_arguments(args)
    source_loader = partial(load_source, cache_dir=args.cache_dir)  # the dense model that speed compares against
    results = evaluate(model, tokenizer, config, model_name=args.model, source_loader=source_loader)
    console.print(results_table(results))
    if args.output:
        write_results(args.output, results)
        console.print(f"results written to {args.output}")
    return 0
