"""The pipeline's stages, one small class each:
dense → score → select → width → sparsify → (unhealed) → heal → evaluate → report.

A stage declares the recipe keys its result depends on (:meth:`Stage.section`), the earlier
stages whose results it reads (:meth:`Stage.upstream`), and :meth:`Stage.run`, which writes its
artifacts into its own directory and returns a summary. The runner (:mod:`.run`) fingerprints
``section`` plus the upstream fingerprints, so a stage re-runs exactly when something it
depends on changed. Adding a stage (streamed surgery, say) is one class here, one entry in
:data:`STAGES` and one recipe section, as ``width`` and ``sparsify`` are. A stage that reads
the model names the last model-making stage before it (:func:`model_source`) as upstream.

The Python API has one shape per stage, ``stage(model, tokenizer, config) -> result``:
:func:`select_layers` / :func:`prune` (score → select → cut, the only copy of that logic),
:func:`heal_model` (one-shot or ``1:k:n``), :func:`layerprune.width.width_prune`,
:func:`layerprune.width.sparsify` and :func:`layerprune.evaluation.evaluate`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.calibration import CalibrationConfig, CalibrationSet, load_calibration
from layerprune.evaluation import evaluate, write_results
from layerprune.healing import HealConfig, heal
from layerprune.merging import merge_model
from layerprune.merging.streamline import replace_block
from layerprune.metrics import Scores, layers_for_ratio, score
from layerprune.models import load_model, num_layers
from layerprune.pipeline.recipe import HealSection, Recipe, SelectSection
from layerprune.provenance import get_provenance, read_record
from layerprune.report import write_run_report
from layerprune.saving import save_model, write_json
from layerprune.surgery import remove_layers
from layerprune.width import sparsify, width_prune

logger = logging.getLogger(__name__)
GGUF_MODEL = "model.gguf"
Loaded = tuple[PreTrainedModel, PreTrainedTokenizerBase]


# --- the Python API: one function per stage ---------------------------------------------


@dataclass
class Selection:
    """What a selection removed (current numbering) and the details recorded in ``layerprune.json``."""

    indices: list[int]
    details: dict[str, Any]


def removal_count(select: SelectSection, layers: int) -> int:
    """k from ``num_layers`` or ``ratio`` (round(R·L), halves up)."""
    return select.num_layers if select.num_layers is not None else layers_for_ratio(select.ratio, layers)


def select_layers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    select: SelectSection,
    calibration: CalibrationConfig | CalibrationSet | None = None,
    scores: Scores | None = None,
    count: int | None = None,
    period: int = 0,
) -> Selection:
    """The layers ``select`` removes: explicit ``layers``, or the first ``count`` (default k) by ``metric``.

    ``scores`` reuses a scoring run (it must hold ``select.metric``); otherwise the metric is
    scored on ``calibration`` (default: :class:`CalibrationConfig`'s defaults). With
    ``select.whole_periods``, runs of ``period`` layers (llama.cpp's attention pattern) go instead.
    """
    if select.layers is not None:
        return Selection(list(select.layers), {"method": "manual"})
    count = count or removal_count(select, num_layers(model))
    if scores is None:
        calib = calibration if calibration is not None else CalibrationConfig(seed=select.seed)
        scores = score(model, tokenizer, [select.metric], calib=calib, **select.scoring_settings())
    chosen = scores.get(select.metric)
    indices = chosen.removal_order(count, select.exclude_first, select.exclude_last)
    details: dict[str, Any] = dict(
        method=select.metric, k=count, ratio=select.ratio, exclude_first=select.exclude_first,
        exclude_last=select.exclude_last, seed=select.seed, scores=chosen.scores,
    )  # fmt: skip
    if chosen.blocks is not None:
        details["block_scores"] = chosen.blocks[count]
    if scores.calibration is not None:
        details["calibration"] = dataclasses.asdict(scores.calibration)
    if select.whole_periods:
        from layerprune.gguf.patterns import whole_period_removal

        count_all = num_layers(model)
        indices = whole_period_removal(indices, details, period, count_all, select.exclude_first, select.exclude_last)
    return Selection(indices, details)


def prune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    select: SelectSection,
    calibration: CalibrationConfig = CalibrationConfig(),  # noqa: B008 (a frozen-by-convention default)
    scores: Scores | None = None,
    period: int = 0,
) -> dict[str, Any]:
    """Make ``model`` shallower in place as ``select`` says (metric, layers, merge or replace); return a summary.

    ``period``: llama.cpp's attention period of the GGUF the model came from, for ``select.whole_periods``.
    """
    before = (num_layers(model), sum(p.numel() for p in model.parameters()))
    if select.merge is not None:
        result = merge_model(model, load_calibration(tokenizer, calibration), _validated(select.merge, model))
        summary: dict[str, Any] = {"groups": [[g.first, g.last] for g in result.stack.groups]}
        summary["threshold"] = result.threshold
    elif select.replace is not None:
        config = select.replace
        training = CalibrationConfig(config.data, config.train_samples, calibration.seq_len, config.seed + 1)
        result = replace_block(
            model, load_calibration(tokenizer, calibration), load_calibration(tokenizer, training), config
        )
        summary = {"block": [result.first, result.last], "similarity": result.similarity, "losses": result.losses}
    else:
        source_map = get_provenance(model).layer_map
        selection = select_layers(model, tokenizer, select, calibration, scores, period=period)
        remove_layers(model, selection.indices, **selection.details)
        summary = {"removed": selection.indices, "removed_source_layers": [source_map[i] for i in selection.indices]}
    summary.update(layers=[before[0], num_layers(model)], parameters=[before[1], _parameters(model)])
    return summary


def _validated(config, model: PreTrainedModel):
    config.validate(num_layers(model))
    return config


def _parameters(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())


def heal_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    section: HealSection,
    directory: Path,
    select: SelectSection | None = None,
    calibration: CalibrationConfig | None = None,
    save_dtype: str | None = None,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Heal into ``directory/model``, one-shot or by ``section.schedule`` (``1:k:n``); resumable.

    An iterative schedule heals the already selected model (step 1), then for each later
    step re-scores the healed model with ``select.metric`` on ``calibration``, removes that
    step's layers and heals again (Lu et al., 2024). Step ``i < n`` writes
    ``directory/step_i/model``; a finished step is loaded instead of re-run, and an
    interrupted one continues from its Trainer checkpoints.
    """
    sizes = section.steps or [0]
    records: list[dict[str, Any]] = []
    for index, size in enumerate(sizes, start=1):
        last = index == len(sizes)
        step_dir = directory if last else directory / f"step_{index}"
        if not last and (step_dir / "model").is_dir():
            model, tokenizer = load_model(str(step_dir / "model"))
            records.append({"step": index, "resumed": True})
            continue
        chosen = {}
        if index > 1:
            chosen = prune(model, tokenizer, with_count(select, size), calibration)
        result = heal(model, tokenizer, _heal_config(section, step_dir, save_dtype))
        model = result.model
        records.append({"step": index, **chosen, "heal": result.summary})
    summary = records[-1]["heal"] if len(records) == 1 else {"schedule": section.schedule, "steps": records}
    return model, summary


def with_count(select: SelectSection, count: int) -> SelectSection:
    """``select`` removing ``count`` layers by its metric (a later step of an iterative schedule)."""
    return select.model_copy(update={"num_layers": count, "ratio": None})


def _heal_config(section: HealSection, step_dir: Path, save_dtype: str | None) -> HealConfig:
    checkpoints = step_dir / "checkpoints"
    return HealConfig(
        output=str(step_dir / "model"),
        method=section.method,
        loss=section.loss,
        data=section.data,
        train=dataclasses.replace(section.train, resume=checkpoints.is_dir()),
        teacher=section.teacher,
        checkpoint_dir=str(checkpoints),
        overwrite=True,
        save_dtype=save_dtype,
        resume_advice="run the same command again to continue from it",
    )


# --- stages for the runner --------------------------------------------------------------


@dataclass
class ModelState:
    """The model flowing through the stages: in memory when the last stage ran here, else loaded on demand."""

    loader: Callable[[], Loaded]
    loaded: Loaded | None = None
    directory: Path | None = None

    def get(self) -> Loaded:
        if self.loaded is None:
            self.loaded = self.loader()
        return self.loaded

    def replace(self, loaded: Loaded | None, directory: Path) -> None:
        """The next stages see ``loaded`` (or, if None, the model saved in ``directory``)."""
        self.loaded, self.directory = loaded, directory
        self.loader = lambda: load_model(str(directory))


@dataclass
class StageContext:
    recipe: Recipe
    directory: Path
    state: ModelState
    inputs: dict[str, Path]
    extra_metrics: list[str] = field(default_factory=list)


class Stage:
    """One step of the pipeline (see the module docstring)."""

    name: ClassVar[str]
    makes_model: ClassVar[bool] = False
    resumable: ClassVar[bool] = False
    additive: ClassVar[bool] = False

    def applies(self, recipe: Recipe) -> bool:
        return True

    def section(self, recipe: Recipe) -> dict[str, Any]:
        raise NotImplementedError

    def upstream(self, recipe: Recipe) -> list[str]:
        return []

    def run(self, context: StageContext) -> dict[str, Any]:
        raise NotImplementedError

    def missing(self, record: dict[str, Any], context: StageContext) -> str | None:
        """Why a finished record does not cover this request (None: it does)."""
        return None


def _dump(recipe: Recipe, *keys: str) -> dict[str, Any]:
    data = recipe.dump()
    return {key: data[key] for key in keys}


class Dense(Stage):
    """Evaluate the dense model once; every run and study cell with the same model and evaluation reuses it."""

    name = "dense"

    def applies(self, recipe: Recipe) -> bool:
        return recipe.evaluate is not None and recipe.evaluate.dense

    def section(self, recipe: Recipe) -> dict[str, Any]:
        return {"model": recipe.dump()["model"], "evaluate": _evaluation(recipe)}

    def run(self, context: StageContext) -> dict[str, Any]:
        model, tokenizer = context.state.get()
        results = evaluate(model, tokenizer, context.recipe.evaluate.config(), model_name="dense")
        write_results(context.directory / "results.json", results)
        return {"results": "results.json"}


def _evaluation(recipe: Recipe) -> dict[str, Any]:
    return {key: value for key, value in recipe.dump()["evaluate"].items() if key not in ("dense", "unhealed")}


class Score(Stage):
    """Score layers on calibration text; additive: a later request for another metric scores only that one."""

    name = "score"
    additive = True

    def applies(self, recipe: Recipe) -> bool:
        return recipe.select is not None and recipe.select.metric is not None

    def section(self, recipe: Recipe) -> dict[str, Any]:
        return {**_dump(recipe, "model", "calibration"), "scoring": recipe.select.scoring_settings()}

    def wanted(self, context: StageContext) -> list[str]:
        return list(dict.fromkeys([context.recipe.select.metric, *context.extra_metrics]))

    def missing(self, record: dict[str, Any], context: StageContext) -> str | None:
        absent = [name for name in self.wanted(context) if name not in record["summary"]["metrics"]]
        return f"adds metric(s) {', '.join(absent)}" if absent else None

    def run(self, context: StageContext) -> dict[str, Any]:
        path = context.directory / "scores.json"
        known = Scores.load(path) if path.is_file() else None
        todo = [name for name in self.wanted(context) if known is None or name not in known.metrics]
        model, tokenizer = context.state.get()
        recipe = context.recipe
        new = score(model, tokenizer, todo, calib=recipe.calibration, **recipe.select.scoring_settings())
        if known is not None:
            new.metrics = {**known.metrics, **new.metrics}
            new.similarity = new.similarity or known.similarity
            new.settings["metrics"] = list(new.metrics)
        new.save(path)
        return {"metrics": sorted(new.metrics)}


class Select(Stage):
    """Cut (metric or layers), merge (SLM/LaCo) or replace (Streamline); save the smaller model."""

    name = "select"
    makes_model = True

    def applies(self, recipe: Recipe) -> bool:
        return recipe.select is not None

    def section(self, recipe: Recipe) -> dict[str, Any]:
        keys = ["model", "select", "output"]
        if recipe.select.kind in ("merge", "replace"):
            keys.append("calibration")
        return _dump(recipe, *keys)

    def upstream(self, recipe: Recipe) -> list[str]:
        return ["score"] if recipe.select.metric is not None else []

    def run(self, context: StageContext) -> dict[str, Any]:
        recipe = context.recipe
        model, tokenizer = context.state.get()
        scores = Scores.load(context.inputs["score"] / "scores.json") if "score" in context.inputs else None
        select = recipe.select
        steps = recipe.heal.steps if recipe.heal else None
        if steps:
            select = with_count(select, steps[0])
        summary = prune(model, tokenizer, select, recipe.calibration, scores, _gguf_period(recipe))
        if recipe.output.format == "gguf":
            return {**summary, "gguf": _save_gguf(model, tokenizer, context, summary["removed"])}
        _save(model, tokenizer, context, recipe.output.dtype)
        return summary


def _gguf_period(recipe: Recipe) -> int:
    """llama.cpp's attention period of the source GGUF when the selection keeps whole periods, else 0."""
    if recipe.output.format != "gguf" or not recipe.select.whole_periods:
        return 0
    from layerprune.gguf.files import check_gguf
    from layerprune.gguf.surgery import file_pattern, gguf_source

    return file_pattern(check_gguf(gguf_source(recipe.model.spec))).period


def _save_gguf(model, tokenizer, context: StageContext, removed: list[int]) -> dict[str, Any]:
    """Write the selection as ``model.gguf`` by direct surgery of the source GGUF; later stages read that file."""
    from layerprune.gguf.surgery import gguf_source, remove_gguf_layers

    step = get_provenance(model).steps[-1]
    path = context.directory / GGUF_MODEL
    summary = remove_gguf_layers(gguf_source(context.recipe.model.spec), path, removed, step, overwrite=True)
    write_json(context.directory / "gguf.json", summary)
    context.state.replace((model, tokenizer), path)
    return summary


def saved_model(directory: Path) -> Path:
    """Where a model-making stage saved its model: ``model.gguf`` (``output.format: gguf``) or ``model``."""
    gguf = directory / GGUF_MODEL
    return gguf if gguf.is_file() else directory / "model"


def _save(model, tokenizer, context: StageContext, dtype: str | None) -> None:
    save_model(model, tokenizer, context.directory / "model", dtype=dtype, overwrite=True)
    context.state.replace(None if dtype else (model, tokenizer), context.directory / "model")


class Width(Stage):
    """Remove attention heads and FFN channels (SlimGPT or a baseline) on the shared calibration; save."""

    name = "width"
    makes_model = True

    def applies(self, recipe: Recipe) -> bool:
        return recipe.width is not None

    def section(self, recipe: Recipe) -> dict[str, Any]:
        return _dump(recipe, "model", "calibration", "width", "output")

    def upstream(self, recipe: Recipe) -> list[str]:
        return model_source(recipe, self)

    def run(self, context: StageContext) -> dict[str, Any]:
        recipe = context.recipe
        model, tokenizer = context.state.get()
        result = width_prune(model, tokenizer, recipe.width, recipe.calibration)
        summary = {
            "ratios": result.ratios,
            "widths": [dataclasses.asdict(width) for width in result.widths],
            "uniform": result.uniform,
            "parameters": [result.parameters_before, result.parameters_after],
            "prune_seconds": round(result.seconds, 2),
        }
        write_json(context.directory / "width.json", summary)
        _save(model, tokenizer, context, recipe.output.dtype)
        return summary


class Sparsify(Width):
    """Zero weights with a layer-wise allocation; resumable: a DSA search continues from its state file.

    Unless the recipe names them, DSA's search state and the function it finds live in this
    stage's directory, so a run never reuses a function found by another run by accident.
    """

    name = "sparsify"
    resumable = True

    def applies(self, recipe: Recipe) -> bool:
        return recipe.sparsify is not None

    def section(self, recipe: Recipe) -> dict[str, Any]:
        return _dump(recipe, "model", "calibration", "sparsify", "output")

    def run(self, context: StageContext) -> dict[str, Any]:
        recipe = context.recipe
        model, tokenizer = context.state.get()
        config = dataclasses.replace(
            recipe.sparsify,
            dsa_function=recipe.sparsify.dsa_function or str(context.directory / "dsa-function.json"),
            dsa_state=recipe.sparsify.dsa_state or str(context.directory / "dsa-search.json"),
        )
        result = sparsify(model, tokenizer, config, recipe.calibration)
        summary = {
            "sparsities": result.sparsities,
            "achieved": result.achieved,
            "function": result.function,
            "prune_seconds": round(result.seconds, 2),
        }
        write_json(context.directory / "sparsity.json", summary)
        _save(model, tokenizer, context, recipe.output.dtype)
        return summary


class Unhealed(Stage):
    """Evaluate the selected model before healing (``evaluate.unhealed``): the "before" of before/after."""

    name = "unhealed"

    def applies(self, recipe: Recipe) -> bool:
        return recipe.evaluate is not None and recipe.evaluate.unhealed and recipe.heal is not None

    def section(self, recipe: Recipe) -> dict[str, Any]:
        return {"evaluate": _evaluation(recipe)}

    def upstream(self, recipe: Recipe) -> list[str]:
        return model_source(recipe, self)

    def run(self, context: StageContext) -> dict[str, Any]:
        model, tokenizer = context.state.get()
        results = evaluate(model, tokenizer, context.recipe.evaluate.config(), model_name=self.name)
        write_results(context.directory / "results.json", results)
        return {"results": "results.json"}


class Heal(Stage):
    """Fine-tune the selected model (one-shot or ``1:k:n``); an interrupted heal resumes from its checkpoints."""

    name = "heal"
    makes_model = True
    resumable = True

    def applies(self, recipe: Recipe) -> bool:
        return recipe.heal is not None

    def section(self, recipe: Recipe) -> dict[str, Any]:
        keys = ["heal", "output"] + (["select", "calibration"] if recipe.heal.steps else [])
        return _dump(recipe, *keys)

    def upstream(self, recipe: Recipe) -> list[str]:
        return model_source(recipe, self)

    def run(self, context: StageContext) -> dict[str, Any]:
        recipe = context.recipe
        model, tokenizer = context.state.get()
        section = recipe.heal.model_copy(update={"teacher": teacher_spec(recipe)})
        healed, summary = heal_model(
            model, tokenizer, section, context.directory, recipe.select, recipe.calibration, recipe.output.dtype
        )
        context.state.replace(None if recipe.output.dtype else (healed, tokenizer), context.directory / "model")
        return summary


def teacher_spec(recipe: Recipe) -> str | None:
    """``teacher: source`` in a run is the model the recipe starts from, unless that one was itself pruned
    (then it stays ``source``: the dense model named in its ``layerprune.json``)."""
    if recipe.heal.teacher != "source":
        return recipe.heal.teacher
    record = read_record(recipe.model.spec) if Path(recipe.model.spec).is_dir() else None
    return "source" if record and record.get("removed_layers") else recipe.model.spec


class Evaluate(Unhealed):
    """Evaluate the final model (tasks, perplexity, speed) into ``results.json``."""

    name = "evaluate"

    def applies(self, recipe: Recipe) -> bool:
        return recipe.evaluate is not None


class Report(Stage):
    """``report.md`` and figures from the results files (no model needed)."""

    name = "report"

    def applies(self, recipe: Recipe) -> bool:
        return recipe.report is not None

    def section(self, recipe: Recipe) -> dict[str, Any]:
        return _dump(recipe, "report")

    def upstream(self, recipe: Recipe) -> list[str]:
        return [stage.name for stage in STAGES[:-1] if stage.applies(recipe)]

    def run(self, context: StageContext) -> dict[str, Any]:
        title = context.recipe.description or f"layerprune run of {context.recipe.model.spec}"
        write_run_report(context.directory, context.inputs, title)
        return {"report": "report.md"}


STAGES: list[Stage] = [Dense(), Score(), Select(), Width(), Sparsify(), Unhealed(), Heal(), Evaluate(), Report()]


def model_source(recipe: Recipe, stage: Stage) -> list[str]:
    """The last model-making stage before ``stage`` that applies to ``recipe`` (none: the source model)."""
    before = STAGES[: next(i for i, s in enumerate(STAGES) if s.name == stage.name)]
    return [s.name for s in before if s.makes_model and s.applies(recipe)][-1:]
