"""``layerprune eval``: zero-shot tasks, perplexity and speed of one model, written as results JSON."""

from __future__ import annotations

import argparse

from layerprune.cli.common import add_model_arguments, console, load_from_arguments
from layerprune.errors import UserError
from layerprune.evaluation import EvalConfig, HarnessOptions, PerplexityOptions, SpeedOptions, evaluate
from layerprune.evaluation.results import results_table, write_results


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
    parser.add_argument("--batch-size", type=int, default=HarnessOptions.batch_size)
    parser.add_argument("--num-fewshot", type=int, default=HarnessOptions.num_fewshot)
    parser.add_argument("--backend", default=HarnessOptions.backend, help="lm-eval backend: hf or vllm (needs vllm)")
    parser.add_argument("--device", default=EvalConfig.device, help="e.g. cpu or cuda:0 (default: where it loads)")
    parser.add_argument(
        "--data-dir",
        default=EvalConfig.data_dir,
        help="local task and perplexity data in the original release formats (offline use)",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="with --data-dir, skip tasks whose local files are missing (recorded in the results)",
    )
    parser.add_argument("--ppl", nargs="+", default=[], help="wikitext2, c4, ptb or a text file (comma or space)")
    parser.add_argument("--seq-len", type=int, default=PerplexityOptions.seq_len, help="perplexity window length")
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
    parser.add_argument("--out", help="write the results JSON here")
    parser.set_defaults(run=run)


def split_names(values: list[str]) -> list[str]:
    """``["a,b", "c"]`` → ``["a", "b", "c"]``."""
    return [name for value in values for name in value.split(",") if name]


def build_config(args: argparse.Namespace) -> EvalConfig:
    """The :class:`EvalConfig` the arguments describe; nothing to do is a :class:`UserError`."""
    tasks, ppl = split_names(args.tasks), split_names(args.ppl)
    if not (tasks or ppl or args.speed):
        raise UserError("nothing to evaluate: give --tasks, --ppl and/or --speed")
    for name, value in (("--limit", args.limit), ("--batch-size", args.batch_size), ("--seq-len", args.seq_len)):
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
            batch_size=args.batch_size,
            num_fewshot=args.num_fewshot,
            skip_missing=args.skip_missing,
            backend=args.backend,
        ),
        perplexity=PerplexityOptions(seq_len=args.seq_len, max_windows=args.ppl_windows),
    )


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    model, tokenizer = load_from_arguments(args)
    results = evaluate(model, tokenizer, config, model_name=args.model)
    console.print(results_table(results))
    if args.out:
        write_results(args.out, results)
        console.print(f"results written to {args.out}")
    return 0
