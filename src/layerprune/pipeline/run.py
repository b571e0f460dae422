"""``run(recipe, output)``: the stages in order into a run directory, skipping, resuming and invalidating.

Run directory::

    recipe.yaml            the resolved recipe (every default written out)
    run.json               schema version, model spec, each stage's fingerprint
    stages/<stage>/        each stage's artifacts, its resolved section and stage.json (its record)
    model -> stages/heal/model      the final model (standard Hugging Face + layerprune.json)
    results.json           the final and the dense model's results, each stage's summary
    report -> stages/report         report.md with its figures

A stage's fingerprint is the SHA-256 of its recipe section and its upstream fingerprints.
``stage.json`` is written (atomically) only when the stage finished, so a kill anywhere
leaves the stage unfinished: re-running the same command skips finished stages whose
fingerprint still matches, resumes an unfinished heal from its Trainer checkpoints, and
re-runs a stage whose fingerprint changed, with every stage after it, saying which keys
changed. Studies use the same runner with a content-addressed :class:`CacheStore`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from layerprune.errors import UserError
from layerprune.gguf.export import export_gguf, parse_export, require_converter
from layerprune.models import load_model, num_layers
from layerprune.pipeline.recipe import Recipe, check_before_work
from layerprune.pipeline.stages import GGUF_MODEL, STAGES, ModelState, Stage, StageContext, saved_model
from layerprune.saving import atomic_write_text, check_apart_from_inputs, output_lock, write_json
from layerprune.width.prune import plan_widths

RECORD, PENDING, RUN_FILE = "stage.json", "pending.json", "run.json"
console = Console()


@dataclass
class PlannedStage:
    """A stage of this run with its fingerprint, where it lives, and what will happen to it."""

    stage: Stage
    fingerprint: str
    section: dict[str, Any]
    directory: Path
    status: str = "run"  # run | cached | resume | re-run | extend
    reason: str = ""

    @property
    def name(self) -> str:
        return self.stage.name


@dataclass
class RunResult:
    output: Path
    plan: list[PlannedStage]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


class RunStore:
    """Stage directories of one run: ``<run>/stages/<name>``; a changed fingerprint invalidates."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, stage: Stage, fingerprint: str) -> Path:
        return self.root / "stages" / stage.name


class CacheStore:
    """Content-addressed stage directories ``<root>/<name>-<fingerprint>`` shared by the cells of a study."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, stage: Stage, fingerprint: str) -> Path:
        return self.root / f"{stage.name}-{fingerprint[:16]}"


def fingerprint(name: str, section: dict[str, Any], upstream: dict[str, str]) -> str:
    """SHA-256 of the stage name, its resolved section and its upstream fingerprints."""
    text = json.dumps({"stage": name, "section": section, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def make_plan(recipe: Recipe, store: RunStore | CacheStore, extra_metrics: list[str] = ()) -> list[PlannedStage]:
    """Every applicable stage with its fingerprint and status (nothing is loaded or written)."""
    plan: list[PlannedStage] = []
    fingerprints: dict[str, str] = {}
    rerun: set[str] = set()
    for stage in (s for s in STAGES if s.applies(recipe)):
        upstream = {name: fingerprints[name] for name in stage.upstream(recipe) if name in fingerprints}
        section = stage.section(recipe)
        digest = fingerprint(stage.name, section, upstream)
        fingerprints[stage.name] = digest
        planned = PlannedStage(stage, digest, section, store.directory(stage, digest))
        _set_status(planned, recipe, extra_metrics, [name for name in upstream if name in rerun])
        if planned.status != "cached":
            rerun.add(stage.name)
        plan.append(planned)
    return plan


def _set_status(planned: PlannedStage, recipe: Recipe, extra: list[str], changed_upstream: list[str]) -> None:
    record = read_json(planned.directory / RECORD)
    pending = read_json(planned.directory / PENDING)
    if record is not None and record["fingerprint"] == planned.fingerprint:
        context = StageContext(recipe, planned.directory, None, {}, list(extra))  # type: ignore[arg-type]
        missing = planned.stage.missing(record, context)
        planned.status, planned.reason = ("extend", missing) if missing else ("cached", "finished")
    elif record is not None:
        planned.status, planned.reason = "re-run", _why(record, planned, changed_upstream)
    elif pending is not None and pending["fingerprint"] == planned.fingerprint and planned.stage.resumable:
        planned.status, planned.reason = "resume", "unfinished; continues from its checkpoints"
    elif pending is not None:
        planned.status, planned.reason = "run", "unfinished; starts again"
    else:
        planned.status, planned.reason = "run", "not run yet"


def _why(record: dict[str, Any], planned: PlannedStage, changed_upstream: list[str]) -> str:
    changes = [
        f"{key}: {old!r} → {new!r}"
        for key, (old, new) in _differences(record.get("section", {}), planned.section).items()
    ]
    if changes:
        return "changed " + "; ".join(changes[:4]) + (" …" if len(changes) > 4 else "")
    if changed_upstream:
        return f"upstream {', '.join(changed_upstream)} re-runs"
    return "its inputs changed"


def _differences(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        found: dict[str, tuple[Any, Any]] = {}
        for key in dict.fromkeys([*old, *new]):
            found.update(_differences(old.get(key), new.get(key), f"{prefix}{key}."))
        return found
    return {} if old == new else {prefix.rstrip("."): (old, new)}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def recipe_inputs(recipe: Recipe) -> list[str]:
    """What the recipe reads that may be a local path: the model, a kd teacher, calibration and healing data."""
    inputs = [recipe.model.spec, recipe.calibration.source]
    if recipe.heal is not None:
        inputs += [recipe.heal.data.source, recipe.heal.teacher]
    return [given for given in inputs if given not in (None, "source")]


def check_output(output: Path, recipe: Recipe, overwrite: bool) -> None:
    """Before any work: the run directory is writable, is ours (or ``overwrite`` allows replacing it),
    and is apart from the recipe's inputs (whatever the flags)."""
    check_apart_from_inputs(output, recipe_inputs(recipe))
    if output.exists() and not output.is_dir():
        raise UserError(f"output {output} exists and is not a directory")
    parent = next((p for p in [output, *output.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"output {output}: {parent} is not writable")
    if overwrite or not output.exists() or not any(output.iterdir()):
        return
    existing = read_json(output / RUN_FILE)
    if existing is None:
        raise UserError(f"output {output} exists and is not a layerprune run; pass --overwrite to replace it")
    if existing.get("model") != recipe.model.spec:
        raise UserError(
            f"output {output} is a run of model {existing.get('model')!r}, not {recipe.model.spec!r}; "
            "pass --overwrite to replace it"
        )


def print_plan(plan: list[PlannedStage], recipe: Recipe) -> None:
    table = Table(title="plan")
    for column in ("stage", "status", "why", "fingerprint"):
        table.add_column(column)
    for planned in plan:
        table.add_row(planned.name, planned.status, planned.reason, planned.fingerprint[:12])
    console.print(table)
    console.print(f"token budget: {token_budget(recipe)}")


def token_budget(recipe: Recipe) -> str:
    """The healing budget in words (steps, tokens or epochs) and the calibration tokens."""
    calibration = recipe.calibration.samples * recipe.calibration.seq_len
    if recipe.heal is None:
        return f"calibration {calibration:,} tokens; no healing"
    train, runs = recipe.heal.train, len(recipe.heal.steps or [0])
    if train.max_steps is not None:
        tokens = train.max_steps * train.batch_size * train.gradient_accumulation * recipe.heal.data.seq_len
        heal = f"{train.max_steps} steps (≤ {tokens:,} tokens)"
    elif train.max_tokens is not None:
        heal = f"{train.max_tokens:,} tokens"
    else:
        heal = f"{train.epochs:g} epoch(s) of {recipe.heal.data.source}"
    return f"calibration {calibration:,} tokens; healing {heal}" + (f" × {runs} runs" if runs > 1 else "")


def run(
    recipe: Recipe,
    output: str | Path,
    *,
    overwrite: bool = False,
    dry_run: bool = False,
    store: RunStore | CacheStore | None = None,
    extra_metrics: list[str] = (),
) -> RunResult:
    """Run ``recipe`` into ``output`` (see the module docstring); ``dry_run`` prints the plan only.

    Everything the recipe and the file system show is checked first (:func:`check_before_work`,
    the output), so a bad recipe writes nothing; the output is then locked against a second
    writer, and what needs the model is checked after the load, before any stage writes.
    """
    output = Path(output)
    check_before_work(recipe)
    check_output(output, recipe, overwrite)
    if recipe.output.export:
        require_converter()
    if dry_run:
        return _planned(recipe, output, store or RunStore(output), extra_metrics)
    with output_lock(output):
        if overwrite and output.exists():
            shutil.rmtree(output)
        result = _planned(recipe, output, store or RunStore(output), extra_metrics)
        state = ModelState(lambda: _load_source(recipe))
        check_against_model(recipe, result.plan, state)
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output / "recipe.yaml", recipe.to_yaml())
        _write_run_file(output, recipe, result.plan)
        for planned in result.plan:
            result.records[planned.name] = _execute(planned, recipe, state, result.plan, list(extra_metrics))
        _finish(output, result.plan, result, recipe.output.export)
    return result


def _planned(recipe: Recipe, output: Path, store: RunStore | CacheStore, extra_metrics: list[str]) -> RunResult:
    plan = make_plan(recipe, store, list(extra_metrics))
    print_plan(plan, recipe)
    return RunResult(output, plan)


def check_against_model(recipe: Recipe, plan: list[PlannedStage], state: ModelState) -> None:
    """What needs the source model (layer indices and counts beyond its depth, a width ratio that removes
    nothing), after its load and before any write; only for a first model stage that will run here
    (a cached one was checked when it ran, and a later one sees another model)."""
    first = next((p for p in plan if p.stage.makes_model), None)
    if first is None or first.status == "cached":
        return
    if first.name == "width":
        plan_widths(state.get()[0], recipe.width)
    select = recipe.select
    if select is None:
        return
    depth = num_layers(state.get()[0])
    if select.layers is not None and max(select.layers) >= depth:
        last = max(select.layers)
        raise UserError(f"select.layers: layer {last} is beyond the model's {depth} layers (0–{depth - 1})")
    if select.num_layers is not None and select.num_layers >= depth:
        raise UserError(f"select.num_layers is {select.num_layers} but the model has only {depth} layers")


def _load_source(recipe: Recipe):
    section = recipe.model
    return load_model(
        section.spec,
        dtype=section.dtype,
        device_map=section.device_map,
        trust_remote_code=section.trust_remote_code,
        allow_pickle=section.allow_pickle,
        cache_dir=section.cache_dir,
    )


def _execute(
    planned: PlannedStage, recipe: Recipe, state: ModelState, plan: list[PlannedStage], extra: list[str]
) -> dict[str, Any]:
    inputs = {p.name: p.directory for p in plan if p.name in planned.stage.upstream(recipe)}
    if planned.status == "cached":
        console.print(f"[bold]{planned.name}[/]: cached ({planned.fingerprint[:12]})")
        if planned.stage.makes_model:
            state.replace(None, saved_model(planned.directory))
        return read_json(planned.directory / RECORD)
    console.rule(f"[bold]{planned.name}[/] — {planned.status}: {planned.reason}")
    if planned.status in ("run", "re-run") and planned.directory.exists():
        shutil.rmtree(planned.directory)
    planned.directory.mkdir(parents=True, exist_ok=True)
    write_json(planned.directory / PENDING, {"fingerprint": planned.fingerprint})
    began = time.perf_counter()
    summary = planned.stage.run(StageContext(recipe, planned.directory, state, inputs, extra))
    record = {
        "stage": planned.name,
        "fingerprint": planned.fingerprint,
        "section": planned.section,
        "seconds": round(time.perf_counter() - began, 2),
        "summary": summary,
    }
    write_json(planned.directory / RECORD, record)
    (planned.directory / PENDING).unlink(missing_ok=True)
    console.print(f"{planned.name}: done in {record['seconds']:.1f} s")
    return record


def _write_run_file(output: Path, recipe: Recipe, plan: list[PlannedStage]) -> None:
    write_json(
        output / RUN_FILE,
        {
            "schema_version": recipe.schema_version,
            "model": recipe.model.spec,
            "stages": {p.name: p.fingerprint for p in plan},
        },
    )


def _finish(output: Path, plan: list[PlannedStage], result: RunResult, export: str | None = None) -> None:
    """Link the final model (and its ``export``) and the report into the run directory, write results.json."""
    by_name = {p.name: p for p in plan}
    final = next(p for p in reversed(plan) if p.stage.makes_model)
    model = saved_model(final.directory)
    for stale in {"model", GGUF_MODEL} - {model.name}:
        if (output / stale).is_symlink():
            (output / stale).unlink()
    _link(output / model.name, model)
    outtype = parse_export(export)
    if outtype is not None:
        exported = model / f"model-{outtype}.gguf"
        if not exported.is_file():
            export_gguf(model, outtype)
        _link(output / exported.name, exported)
    if "report" in by_name:
        _link(output / "report", by_name["report"].directory)
    for name, key in (("evaluate", "final"), ("dense", "dense"), ("unhealed", "unhealed")):
        if name in by_name:
            result.results[key] = read_json(by_name[name].directory / "results.json")
    result.results["stages"] = {name: record.get("summary") for name, record in result.records.items()}
    result.results["seconds"] = {name: record.get("seconds") for name, record in result.records.items()}
    write_json(output / "results.json", result.results)
    _print_summary(result)


def _link(link: Path, target: Path) -> None:
    """``link`` → ``target`` (relative), replacing an older link."""
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())


def _print_summary(result: RunResult) -> None:
    table = Table(title=f"run {result.output}")
    for column in ("stage", "status", "seconds"):
        table.add_column(column)
    for planned in result.plan:
        record = result.records.get(planned.name) or {}
        table.add_row(planned.name, planned.status, str(record.get("seconds", "")))
    console.print(table)
    final, dense = result.results.get("final"), result.results.get("dense")
    for label, results in (("dense", dense), ("final", final)):
        if results:
            ppl = ", ".join(f"{k} {v['ppl']:.2f}" for k, v in results.get("perplexity", {}).items())
            console.print(f"{label}: {results['num_layers']} layers; {ppl}")
    gguf = result.output / GGUF_MODEL
    console.print(f"model: {gguf if gguf.is_symlink() else result.output / 'model'}")
