"""Iterative prune → heal schedules in the paper's ``1:k:n`` notation.

``1:k:n`` removes ``n`` layers in steps of ``k`` (the last step takes the remainder), with one
healing run after every removal; before each removal the layers are re-scored on the
current, already healed model (Lu et al., 2024, "Reassessing Layer Pruning in LLMs", whose
iterative scripts were removed from their repository). ``1:n:n`` is one-shot prune + heal.

Layout of ``output``: ``step_1/scores.json``, ``step_1/model/`` (the healed model, written
atomically), ``step_2/…``, and ``schedule.json`` (every step's removed layers, scores and
healing summary; the summary is also the last step in ``model/layerprune.json``). A step
counts as finished when its ``model/`` exists, so an interrupted run resumes after the last
finished step, and a step killed during healing resumes from that step's checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.errors import UserError
from layerprune.healing.heal import HealConfig, heal
from layerprune.healing.teacher import load_teacher
from layerprune.metrics import METRICS, ScoringContext
from layerprune.models import load_model, num_layers
from layerprune.provenance import get_provenance, read_record
from layerprune.saving import write_json
from layerprune.surgery import remove_layers

logger = logging.getLogger(__name__)
SCHEDULE_FILE = "schedule.json"


@dataclass
class IterateConfig:
    """``heal.output`` is ignored: each step writes ``<output>/step_i/model``."""

    output: str
    schedule: str = "1:4:8"
    metric: str = "reverse-order"
    exclude_first: int = 0
    exclude_last: int = 0
    heal: HealConfig = field(default_factory=lambda: HealConfig(output=""))


def parse_schedule(text: str) -> list[int]:
    """``"1:k:n"`` → the number of layers removed at each step, e.g. ``1:4:10`` → ``[4, 4, 2]``."""
    try:
        rounds, step, total = (int(part) for part in text.split(":"))
    except ValueError:
        raise UserError(f"cannot read schedule {text!r}; write it as 1:k:n, e.g. 1:4:8") from None
    if rounds != 1 or not 0 < step <= total:
        raise UserError(f"schedule {text!r}: the form is 1:k:n with 0 < k ≤ n (one healing run per step)")
    return [min(step, total - done) for done in range(0, total, step)]


def iterate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: IterateConfig,
    context: ScoringContext | None = None,
    teacher: PreTrainedModel | None = None,
) -> tuple[PreTrainedModel, list[dict[str, Any]]]:
    """Run the schedule; return the final model and one record per step (also in ``schedule.json``).

    ``context`` carries the calibration data for data metrics (``ScoringContext.calibration``).
    """
    sizes = parse_schedule(config.schedule)
    METRICS.get(config.metric)
    if sum(sizes) >= num_layers(model):
        raise UserError(f"schedule {config.schedule} removes {sum(sizes)} of {num_layers(model)} layers")
    context = context or ScoringContext(seed=config.heal.train.seed)
    if teacher is None and config.heal.loss.needs_teacher:
        # "source" here may be the model itself: it is the dense model the schedule cuts.
        spec = get_provenance(model).source if config.heal.teacher == "source" else config.heal.teacher
        teacher = load_teacher(model, spec)
    records: list[dict[str, Any]] = []
    for index, count in enumerate(sizes, start=1):
        step_dir = Path(config.output) / f"step_{index}"
        if (step_dir / "model").is_dir():
            logger.info("step %d already finished; loading %s", index, step_dir / "model")
            model, tokenizer = load_model(str(step_dir / "model"))
            records.append(_read_step(step_dir))
            continue
        model, record = _run_step(model, tokenizer, config, context, teacher, step_dir, count)
        records.append(record)
        write_json(Path(config.output) / SCHEDULE_FILE, {"schedule": config.schedule, "steps": records})
    return model, records


def _run_step(model, tokenizer, config: IterateConfig, context, teacher, step_dir: Path, count: int):
    """Score, remove ``count`` layers, heal into ``step_dir/model`` (resuming its checkpoints if any).

    Scoring gets a fresh ``context.cache``: the healed model's similarities are new.
    """
    scores = METRICS.get(config.metric)(model, dataclasses.replace(context, cache={}))
    indices = scores.removal_order(count, config.exclude_first, config.exclude_last)
    chosen = {
        "metric": scores.metric,
        "scores": scores.scores,
        "removed": indices,
        "removed_source_layers": [get_provenance(model).layer_map[i] for i in indices],
    }
    write_json(step_dir / "scores.json", chosen)
    remove_layers(model, indices, method=config.metric, seed=context.seed)
    checkpoints = step_dir / "checkpoints"
    heal_config = dataclasses.replace(config.heal, output=str(step_dir / "model"), checkpoint_dir=str(checkpoints))
    heal_config.train = dataclasses.replace(config.heal.train, resume=checkpoints.is_dir())
    result = heal(model, tokenizer, heal_config, teacher=teacher)
    return result.model, {**chosen, "heal": result.summary}


def _read_step(step_dir: Path) -> dict[str, Any]:
    """A finished step's record: its scores plus the heal step recorded in the model's ``layerprune.json``."""
    chosen = json.loads((step_dir / "scores.json").read_text())
    return {**chosen, "heal": read_record(step_dir / "model")["steps"][-1]}
