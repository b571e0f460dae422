"""``evaluate``: tasks, perplexity and speed of one in-memory model, returned in the results schema."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, field
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.config import strict_config
from layerprune.evaluation.harness import HarnessOptions, run_tasks
from layerprune.evaluation.perplexity import PerplexityOptions, perplexity
from layerprune.evaluation.results import new_results
from layerprune.evaluation.speed import SpeedOptions, measure_speed, speed_ratios
from layerprune.evaluation.tasks import SUITES, expand_tasks
from layerprune.models import load_model
from layerprune.provenance import get_provenance

logger = logging.getLogger(__name__)

SourceLoader = Callable[[str, torch.dtype, torch.device], PreTrainedModel]


@strict_config
class EvalConfig:
    """Everything ``layerprune eval`` can do, with its defaults (the CLI builds one of these).

    ``tasks`` are lm-eval task/group names or suite names (``paper8``, ``zeroshot7``);
    ``ppl`` are perplexity datasets (``wikitext2``, ``c4``, ``ptb``) or text files;
    ``speed`` set means measure speed (and the source model's, for a pruned model).
    """

    tasks: list[str] = field(default_factory=list)
    ppl: list[str] = field(default_factory=list)
    speed: SpeedOptions | None = None
    data_dir: str | None = None
    device: str | None = None
    seed: int = 0
    harness: HarnessOptions = field(default_factory=HarnessOptions)
    perplexity: PerplexityOptions = field(default_factory=PerplexityOptions)


def load_source(spec: str, dtype: torch.dtype, device: torch.device, cache_dir: str | None = None) -> PreTrainedModel:
    """The dense source model, in the pruned model's dtype and on its device (a GGUF dequantized in ``cache_dir``)."""
    model, _ = load_model(spec, dtype=dtype, cache_dir=cache_dir)
    return model.to(device)


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: EvalConfig | None = None,
    model_name: str | None = None,
    source_loader: SourceLoader = load_source,
) -> dict[str, Any]:
    """Evaluate ``model`` as ``config`` says and return one results dict (see :mod:`results`)."""
    config = config or EvalConfig()
    if config.device is not None:
        model.to(config.device)
    torch.manual_seed(config.seed)
    results = new_results(model, model_name, settings=asdict(config), seed=config.seed)
    if config.tasks:
        _timed(results, "tasks", lambda: _add_tasks(results, model, tokenizer, config))
    for name in config.ppl:
        results["perplexity"][name] = _timed(
            results, f"ppl:{name}", lambda n=name: perplexity(model, tokenizer, n, config.perplexity, config.data_dir)
        )
    if config.speed is not None:
        results["speed"] = _timed(results, "speed", lambda: speed_report(model, config.speed, source_loader))
    return results


def _timed(results: dict[str, Any], stage: str, run: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = run()
    results["wall_time_s"][stage] = round(time.perf_counter() - start, 2)
    return value


def _add_tasks(results: dict[str, Any], model, tokenizer, config: EvalConfig) -> None:
    names, suites = expand_tasks(config.tasks)
    run = run_tasks(model, tokenizer, names, config.harness, config.data_dir, config.seed)
    results["tasks"], results["data"] = run.tasks, run.data
    for suite_name in suites:
        suite = SUITES.get(suite_name)
        average = suite.average(run.tasks)
        results["suites"][suite_name] = {**asdict(average), "reference": suite.reference}


def speed_report(model: PreTrainedModel, options: SpeedOptions, source_loader: SourceLoader = load_source) -> dict:
    """Speed of ``model``; for a pruned model also of its dense source, with measured and ideal ratios."""
    report: dict[str, Any] = {"model": measure_speed(model, options)}
    provenance = get_provenance(model)
    if provenance.removed_layers:
        logger.info("measuring the source model %s for the speed ratio", provenance.source)
        source = source_loader(provenance.source, model.dtype, model.device)
        report["source"] = measure_speed(source, options)
        report["ratios"] = speed_ratios(report["model"], report["source"])
        del source
    return report
