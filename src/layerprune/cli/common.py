"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.calibration import CalibrationConfig, CalibrationSet, load_calibration
from layerprune.errors import UserError
from layerprune.models import load_model
from layerprune.models.architectures import num_layers
from layerprune.models.loading import resolve_dtype
from layerprune.saving import check_apart_from_inputs, check_output_dir, check_output_file, save_model

console = Console()


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help="'default' (embedded SmolLM2-135M), a model directory, a .gguf file or a hub id",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        help="load (and save) in this dtype: auto (default: keep), float32, bfloat16 or float16",
    )
    parser.add_argument("--device-map", default=None, help="passed to from_pretrained, e.g. 'auto' or 'cpu'")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model repository's own code")
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickled .bin weights")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where GGUF models (this one, a kd teacher, the speed baseline) are dequantized "
        "(default: $LAYERPRUNE_CACHE or ~/.cache/layerprune)",
    )


def add_streaming_arguments(parser: argparse.ArgumentParser) -> None:
    """``--streaming/--no-streaming`` (default: stream when the checkpoint exceeds the memory) and ``--device``."""
    parser.add_argument(
        "--streaming",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read a local safetensors checkpoint or GGUF file one layer or tensor at a time instead of loading it "
        "(default: only when its size in memory, from the safetensors headers or the GGUF's float32 size, "
        "exceeds the available memory)",
    )
    parser.add_argument(
        "--device", default=None, help="where streamed layers run, e.g. cuda or cpu (default: cuda when present)"
    )


def streaming_from_arguments(args: argparse.Namespace) -> bool:
    """Whether this command streams (its ``--output`` checked first); prints the mode and why."""
    from layerprune.streaming.mode import choose_streaming

    check_output(args)

    streaming, reason = choose_streaming(args.model, args.streaming, resolve_dtype(args.dtype))
    console.print(f"mode: {'streamed' if streaming else 'in memory'} ({reason})")
    return streaming


def streaming_device(args: argparse.Namespace) -> str:
    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_from_arguments(args: argparse.Namespace) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    check_output(args)
    return load_model(
        args.model,
        dtype=args.dtype,
        device_map=args.device_map,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        cache_dir=args.cache_dir,
    )


def add_calibration_arguments(parser: argparse.ArgumentParser, defaults: CalibrationConfig | None = None) -> None:
    """``--calibration --samples --seq-len --seed``: the recipe's ``calibration`` section as flags.

    Defaults come from ``defaults``, the calibration settings of the command's own config class
    (:class:`CalibrationConfig` unless given).
    """
    defaults = defaults or CalibrationConfig()
    group = parser.add_argument_group("calibration (the recipe's calibration section)")
    group.add_argument(
        "--calibration",
        default=defaults.source,
        help="calibration text: 'default' (Python's bundled language reference), wikitext2, c4, dolly, alpaca, "
        "oasst1, bookcorpus, pg19 (see `layerprune data`), or a .txt/.jsonl/.json/.parquet file",
    )
    group.add_argument("--samples", type=int, default=defaults.samples, help="calibration windows")
    group.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per calibration window")
    group.add_argument("--seed", type=int, default=defaults.seed, help="seed for window sampling and random choices")


def calibration_config_from_arguments(args: argparse.Namespace) -> CalibrationConfig:
    return CalibrationConfig(source=args.calibration, samples=args.samples, seq_len=args.seq_len, seed=args.seed)


def calibration_from_arguments(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> CalibrationSet:
    return load_calibration(tokenizer, calibration_config_from_arguments(args))


def parameter_count(model: PreTrainedModel) -> int:
    """Unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def add_output_arguments(parser: argparse.ArgumentParser, what: str, model: bool = True) -> None:
    """``--output DIR`` (written atomically) and ``--overwrite``; for a saved ``model``, also ``--export``."""
    parser.add_argument("--output", required=True, metavar="DIR", help=f"directory for {what}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    if model:
        parser.add_argument(
            "--export",
            default=None,
            metavar="gguf[:TYPE]",
            help="also convert the saved model with llama.cpp's converter into DIR/model-TYPE.gguf "
            "(TYPE f16 (default), bf16, q8_0 or f32; needs layerprune[gguf])",
        )
    parser.set_defaults(output_is_file=False)


def check_export(args: argparse.Namespace) -> None:
    """``--export``: a known type and the converter installed, before any work."""
    from layerprune.gguf.export import parse_export, require_converter

    if parse_export(getattr(args, "export", None)) is not None:
        require_converter()


def export_saved(args: argparse.Namespace, directory: str | Path) -> None:
    """Run ``--export`` on the saved model directory (nothing without the flag)."""
    from layerprune.gguf.export import export_gguf, parse_export

    outtype = parse_export(getattr(args, "export", None))
    if outtype is not None:
        console.print(f"exported to {export_gguf(directory, outtype)}")


def add_output_file_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--output FILE`` (optional; an existing file is replaced)."""
    parser.add_argument("--output", default=None, metavar="FILE", help=f"write {what} to this JSON file")
    parser.set_defaults(output_is_file=True)


INPUT_ARGUMENTS = ("model", "teacher", "scores", "results", "data", "calibration", "dsa_state")


def _as_list(value: str | list[str] | None) -> list[str]:
    return value if isinstance(value, list) else [value]


def check_output(args: argparse.Namespace) -> None:
    """Fail before any work if ``--output`` (a file or a directory, as the command writes) cannot be written,
    or is, lies inside or contains one of the command's inputs (the model, a teacher, a data or scores file)."""
    if getattr(args, "output", None) is None:
        return
    inputs = [getattr(args, name, None) for name in INPUT_ARGUMENTS]
    check_apart_from_inputs(args.output, [path for given in inputs for path in _as_list(given)])
    if is_gguf_output(args):
        check_gguf_output(args)
    elif args.output_is_file:
        check_output_file(args.output)
    else:
        check_output_dir(args.output, args.overwrite)
        check_export(args)


def is_gguf_output(args: argparse.Namespace) -> bool:
    return not args.output_is_file and str(args.output).endswith(".gguf")


def check_gguf_output(args: argparse.Namespace) -> None:
    """A ``.gguf`` output: only ``prune`` writes one (direct surgery keeps the quantization); the file must be free."""
    if not getattr(args, "gguf_output", False):
        raise UserError(
            f"{args.command} rewrites the weights, so it cannot keep a GGUF's quantization and does not write "
            f"{args.output}; save to a directory and convert it: --output DIR --export gguf[:q8_0]"
        )
    if getattr(args, "export", None):
        raise UserError(f"{args.output} is already a GGUF (direct surgery keeps the quantization); drop --export")
    if Path(args.output).exists() and not args.overwrite:
        raise UserError(f"output {args.output} already exists; pass --overwrite to replace it")
    check_output_file(args.output)


def model_size(model: PreTrainedModel) -> tuple[int, int]:
    """(decoder layers, parameters) of ``model``, to report a change in size."""
    return num_layers(model), parameter_count(model)


def save_and_report_size(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace, before: tuple[int, int]
) -> None:
    """Save the model atomically to ``args.output`` and print its size before and after."""
    save_model(model, tokenizer, args.output, overwrite=args.overwrite)
    layers, parameters = model_size(model)
    console.print(f"layers:     {before[0]} → {layers}")
    console.print(f"parameters: {before[1]:,} → {parameters:,}")
    console.print(f"saved to {args.output}")
    export_saved(args, args.output)
