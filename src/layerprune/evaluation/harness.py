"""Zero-shot tasks through lm-evaluation-harness, in-process, on the in-memory model.

The model and tokenizer are wrapped in lm-eval's own ``HFLM`` (which batches requests,
sorts them by length and shows a progress bar), and ``lm_eval.simple_evaluate`` runs the
tasks: prompts, targets, metrics and stderrs are lm-eval's, nothing is re-implemented.
Each task that has a converter in :mod:`local_data` and whose files :func:`layerprune.data.locate`
finds (``--data-dir``, ``$LAYERPRUNE_DATA``, the embedded slices) is loaded from its registered
lm-eval config with ``dataset_path`` pointed at the converted local copy; others go to the Hub.
With ``backend="vllm"`` the model is saved to a temporary directory and lm-eval's own
``vllm`` model type loads it from there (``pretrained=DIR``; see docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.config import strict_config
from layerprune.data import ENV_VAR, DataRoot, hub_offline, locate
from layerprune.errors import UserError
from layerprune.evaluation.local_data import LOCAL_TASKS, prepare_local_task

logger = logging.getLogger(__name__)

REPORTED_METRICS = ("acc", "acc_norm")


@strict_config
class HarnessOptions:
    """Settings passed to lm-eval; ``limit`` is per task (its first N documents)."""

    limit: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] = 8
    num_fewshot: Annotated[int, Field(ge=0)] | None = None
    bootstrap_iters: Annotated[int, Field(ge=0)] = 1000
    skip_missing: bool = False
    """Skip (and record) tasks whose local files are missing (or are damaged) with the Hub off, instead of failing."""
    backend: Literal["hf", "vllm"] = "hf"
    """``hf``: lm-eval's HFLM on the in-memory model; ``vllm``: lm-eval's vLLM backend on a saved copy."""
    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1
    """vllm backend: GPUs that one model is spread over."""

    def __post_init__(self) -> None:
        require_backend(self.backend)


@dataclass
class TaskRun:
    """Per-task metrics (``acc``, ``acc_stderr``, ``acc_norm``, … and ``samples``) and data provenance."""

    tasks: dict[str, dict[str, Any]]
    data: dict[str, dict[str, Any]] = field(default_factory=dict)


@functools.cache
def task_manager():
    """lm-eval's index of every task, group and tag (built once per process; takes a few seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def check_task_names(names: list[str], manager) -> None:
    """Raise a :class:`UserError` naming the closest lm-eval task for each unknown name."""
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown lm-eval task {name!r}.{hint} Run `lm-eval ls tasks` for the list")


def local_data_name(name: str, manager) -> str | None:
    """The :data:`LOCAL_TASKS` entry serving lm-eval task ``name``; MMLU subjects and subgroups share ``mmlu``."""
    if name in LOCAL_TASKS:
        return name
    path = manager.task_index[name].yaml_path
    return "mmlu" if path is not None and path.parent.parts[-2:] == ("mmlu", "default") else None


def local_spec(name: str, local: str, root: DataRoot, manager) -> tuple[dict[str, Any], dict[str, Any]]:
    """Task (or group) ``name``'s registered lm-eval config with ``dataset_path`` at the local copy of ``local``."""
    from lm_eval.tasks._yaml_loader import load_yaml

    prepared = prepare_local_task(local, root)
    config = load_yaml(manager.task_index[name].yaml_path, resolve_func=True)
    spec = {**config, **prepared.overrides}
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if spec.get(key) is not None and spec[key] not in prepared.counts:
            spec[key] = None  # e.g. ARC without its Dev file (the embedded slice has only test items)
    data = {
        "source": root.origin,
        "dataset_path": prepared.overrides["dataset_path"],
        "counts": prepared.counts,
        "official_counts": prepared.expected,
        "note": prepared.note,
    }
    return spec, data


def task_specs(
    names: list[str], data_dir: str | None, manager, skip_missing: bool = False
) -> tuple[list[str | dict], dict[str, dict]]:
    """lm-eval task specs: local config dicts where a data folder holds the task (see
    :func:`layerprune.data.locate`), else the plain name (lm-eval loads it from the Hub).

    With ``skip_missing``, a task that has no local copy while the Hub is off is skipped and recorded.
    """
    check_task_names(names, manager)
    specs: list[str | dict] = []
    data: dict[str, dict] = {}
    for name in names:
        try:
            spec, data[name] = _task_spec(name, data_dir, manager)
        except UserError as error:
            if not skip_missing:
                raise UserError(f"{error} (or pass --skip-missing to run the other tasks)") from None
            logger.warning("skipping %s: %s", name, error)
            data[name] = {"source": "missing", "error": str(error)}
            continue
        specs.append(spec)
    return specs, data


def _task_spec(name: str, data_dir: str | None, manager) -> tuple[str | dict, dict[str, Any]]:
    """One task's spec and data record: local where a data folder holds it, else lm-eval's Hub copy."""
    local = local_data_name(name, manager)
    location = locate(local, "task", data_dir) if local is not None else None
    if location is not None and location.root is not None:
        return local_spec(name, local, location.root, manager)
    offline = hub_offline()
    if offline is not None:
        raise UserError(f"task {name} has no local files and {offline} is set; lm-eval needs the Hub for it")
    return name, {"source": "hub"}


def run_tasks(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    names: list[str],
    options: HarnessOptions,
    data_dir: str | None = None,
    seed: int = 0,
) -> TaskRun:
    """Evaluate ``names`` (lm-eval tasks or groups) zero-shot (or ``num_fewshot``) on the in-memory model.

    Tasks that have a local converter read local files where a data folder holds them; others use the hub.
    """
    import lm_eval

    manager = task_manager()
    specs, data = task_specs(names, data_dir, manager, options.skip_missing)
    if not specs:
        raise UserError("no task left to run: every requested task lacks its local data files")
    try:
        with lm_eval_model(model, tokenizer, options, seed) as backend:
            output = lm_eval.simple_evaluate(
                **backend,
                tasks=specs,
                num_fewshot=options.num_fewshot,
                limit=options.limit,
                task_manager=manager,
                log_samples=False,
                bootstrap_iters=options.bootstrap_iters,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
    except (ConnectionError, OSError) as error:
        raise UserError(
            f"lm-eval could not load task data ({error}); offline, set {ENV_VAR} (or pass --data-dir) to a folder "
            f"with local files for: {', '.join(LOCAL_TASKS.names())}"
        ) from None
    return TaskRun(tasks=extract_metrics(output), data=data)


def require_backend(backend: str) -> None:
    """The vllm backend needs the ``vllm`` package, which layerprune does not install."""
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise UserError("the vllm backend needs vLLM, which is not installed (pip install vllm; it runs on CUDA GPUs)")


@contextlib.contextmanager
def lm_eval_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, options: HarnessOptions, seed: int = 0
) -> Iterator[dict[str, Any]]:
    """``simple_evaluate``'s model keywords: an HFLM on ``model``, or ``"vllm"`` on a temporary saved copy."""
    if options.backend == "hf":
        from lm_eval.models.huggingface import HFLM

        yield {"model": HFLM(pretrained=model, tokenizer=tokenizer, batch_size=options.batch_size)}
        return
    from layerprune.saving import save_model

    with tempfile.TemporaryDirectory(prefix="layerprune-vllm-") as directory:
        saved = save_model(model, tokenizer, Path(directory) / "model")
        yield {"model": "vllm", "model_args": vllm_model_args(saved, model, options, seed)}


def vllm_model_args(directory: Path, model: PreTrainedModel, options: HarnessOptions, seed: int) -> dict[str, Any]:
    """Arguments of lm-eval's ``VLLM`` model for a model saved in ``directory``."""
    return {
        "pretrained": str(directory),
        "dtype": str(model.dtype).removeprefix("torch."),
        "tensor_parallel_size": options.tensor_parallel_size,
        "batch_size": options.batch_size,
        "seed": seed,
    }


def extract_metrics(output: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: {acc, acc_stderr, acc_norm, acc_norm_stderr, samples}}`` from lm-eval's results (tasks and groups).

    lm-eval keys metrics as ``"acc,none"`` and ``"acc_stderr,none"``; a metric a task does
    not report is ``None``. ``samples`` is the number of documents evaluated (after ``limit``).
    """
    samples = output.get("n-samples", {})
    merged = {**output["results"], **output.get("groups", {})}
    tasks = {}
    for name, values in merged.items():
        entry: dict[str, Any] = {}
        for metric in REPORTED_METRICS:
            entry[metric] = _number(values.get(f"{metric},none"))
            entry[f"{metric}_stderr"] = _number(values.get(f"{metric}_stderr,none"))
        entry["samples"] = samples.get(name, {}).get("effective")
        tasks[name] = entry
    return tasks


def _number(value: Any) -> float | None:
    """lm-eval writes ``"N/A"`` for a stderr it could not compute."""
    return float(value) if isinstance(value, int | float) else None
