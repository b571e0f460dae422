"""``run_study``: a base recipe run over a grid of key paths, sharing every piece of work the cells share.

A study file::

    # layerprune study reassessing --output runs/reassessing
    base: quickstart                 # a shipped recipe name, a path (relative to this file) or a mapping
    set: {heal.train.max_steps: 20}  # overrides applied to the base first (optional)
    grid:                            # key path → values; the cells are the product, in this order
      select.metric: [reverse-order, random, magnitude-l1, magnitude-l2, taylor, ppl, bi]
      heal.method: [lora, partial]

Sharing: every cell's stages live in one content-addressed cache (``<output>/cache``), keyed
by fingerprint. So the dense model is evaluated once, one scoring pass (one calibration set,
one similarity pass) scores every metric the grid needs, a selection healed two ways is cut
once, and adding a grid value runs only the new cells; a killed study resumes. Each cell is a
run directory in ``<output>/cells/<cell>``. The study writes ``results.csv``, ``results.md``
and the figures (:func:`layerprune.report.write_study_report`).
"""

from __future__ import annotations

import copy
import csv
import difflib
import io
import itertools
import json
import shutil
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprune.config import ConfigError
from layerprune.errors import UserError
from layerprune.pipeline.recipe import (
    Recipe,
    check_before_work,
    parse_override,
    read_mapping,
    resolve_shipped,
    set_key,
    validate_recipe,
)
from layerprune.pipeline.run import CacheStore, console, make_plan, read_json, recipe_inputs
from layerprune.pipeline.run import run as run_recipe
from layerprune.report import write_study_report
from layerprune.saving import atomic_write_text, check_apart_from_inputs, output_lock

STUDY_KEYS = {"description", "base", "set", "grid"}


@dataclass
class Cell:
    """One grid point: its values by key path, its directory name and its validated recipe."""

    values: dict[str, Any]
    name: str
    recipe: Recipe


def load_study(source: str | Path, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], list[Cell]]:
    """Read a study file (or shipped name) and validate every cell's recipe; nothing is loaded.

    ``overrides`` (``key.path=value``, as ``run --set``) apply to the base after the study's own
    ``set`` and before the grid, so they change every cell.
    """
    path = resolve_shipped(str(source), "studies")
    study = read_mapping(path)
    _check_keys(study, source)
    grid = _grid(study.get("grid") or {}, source)
    base = _base(study.get("base"), path)
    settings = study.get("set") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{source}: set maps key paths to values, e.g. set: {{heal.train.max_steps: 20}}")
    for key, value in settings.items():
        set_key(base, key, value)
    for override in overrides:
        set_key(base, *parse_override(override))
    cells = [_cell(base, dict(zip(grid, values, strict=True)), source) for values in itertools.product(*grid.values())]
    check_names(cells, source)
    return study, cells


def _check_keys(study: dict[str, Any], source: str | Path) -> None:
    for key in study:
        if key not in STUDY_KEYS:
            close = difflib.get_close_matches(str(key), sorted(STUDY_KEYS), n=1)
            hint = f" — did you mean {close[0]!r}?" if close else f" (valid: {', '.join(sorted(STUDY_KEYS))})"
            raise ConfigError(f"{source}: unknown study key {key!r}{hint}")


def _grid(grid: Any, source: str | Path) -> dict[str, list[Any]]:
    """The grid: key paths to non-empty lists, each value once (a repeated value would repeat its cells)."""
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{source}: grid maps key paths to non-empty lists of values")
    for key, values in grid.items():
        seen = [json.dumps(value, sort_keys=True, default=str) for value in values]
        repeated = next((values[i] for i, text in enumerate(seen) if seen.index(text) != i), None)
        if repeated is not None:
            raise ConfigError(f"{source}: grid {key} lists {repeated!r} twice; each value makes its own cells")
    return grid


def check_names(cells: list[Cell], source: str | Path) -> None:
    """Distinct cells have distinct directory names (else one would overwrite the other's results)."""
    by_name: dict[str, Cell] = {}
    for cell in cells:
        other = by_name.setdefault(cell.name, cell)
        if other is not cell:
            raise ConfigError(
                f"{source}: cells {other.values} and {cell.values} would share the directory name {cell.name!r}"
            )


def _base(base: Any, study_path: Path) -> dict[str, Any]:
    if isinstance(base, dict):
        return copy.deepcopy(base)
    if not isinstance(base, str):
        raise ConfigError(f"{study_path}: base is a recipe name, a path or a mapping")
    relative = study_path.parent / base
    return read_mapping(relative if relative.is_file() else resolve_shipped(base, "recipes"))


def _cell(base: dict[str, Any], values: dict[str, Any], source: str | Path) -> Cell:
    data = copy.deepcopy(base)
    for key, value in values.items():
        set_key(data, key, value)
    name = "_".join(_label(key, value) for key, value in values.items()) or "base"
    try:
        recipe = validate_recipe(data, f"{source}: cell {name}")
    except ConfigError as error:
        keys = ", ".join(values)
        raise ConfigError(f"{error} (grid keys: {keys})") from None
    return Cell(values, name, recipe)


def _label(key: str, value: Any) -> str:
    """``select.metric=bi`` → ``metric-bi``; a mapping → its leaf values joined (``{method: slm}`` → ``slm``).

    Characters other than letters, digits and ``.+-`` are percent-encoded (``1,3`` → ``1%2C3``,
    ``_`` too, which joins the keys), so distinct values give distinct names.
    """
    if isinstance(value, dict):
        return "-".join(f"{k}-{_label('', v)}" if isinstance(v, dict) else _quote(v) for k, v in value.items())
    return f"{key.rsplit('.', 1)[-1]}-{_quote(value)}" if key else _quote(value)


def _quote(value: Any) -> str:
    return urllib.parse.quote(str(value), safe=".+-").replace("_", "%5F")  # quote keeps "_", the key separator


def run_study(
    source: str | Path,
    output: str | Path,
    dry_run: bool = False,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run every cell of the study into ``output``; return the rows of ``results.csv``.

    ``overwrite`` removes ``output`` first (its cache included), so nothing is reused.
    """
    output = Path(output)
    study, cells = load_study(source, overrides)
    for cell in cells:
        check_before_work(cell.recipe)
        check_apart_from_inputs(output, recipe_inputs(cell.recipe))
    if dry_run:
        _print_cells(cells, CacheStore(output / "cache"))
        return []
    with output_lock(output):
        if overwrite and output.exists():
            shutil.rmtree(output)
        if output.exists() and not (output / "cache").is_dir() and any(output.iterdir()):
            raise UserError(f"output {output} exists and is not a layerprune study")
        rows = _run_cells(cells, output, study.get("description") or f"study {source}")
    return rows


def _run_cells(cells: list[Cell], output: Path, description: str) -> list[dict[str, Any]]:
    """Each cell into ``<output>/cells/<cell>``, sharing ``<output>/cache``; the rows of results.csv.

    ``results.csv`` and the report are rewritten after every cell, so an interrupted study
    (which resumes when run again) leaves the table of the cells it finished.
    """
    store = CacheStore(output / "cache")
    metrics = _print_cells(cells, store)
    rows = []
    for index, cell in enumerate(cells, start=1):
        console.rule(f"[bold]cell {index}/{len(cells)}: {cell.name}")
        extra = metrics.get(_score_fingerprint(cell, store), [])
        run_recipe(cell.recipe, output / "cells" / cell.name, store=store, extra_metrics=extra)
        rows.append(row_of(cell, output / "cells" / cell.name))
        write_rows(output / "results.csv", rows)
        done = "" if index == len(cells) else f" ({index} of {len(cells)} cells so far)"
        write_study_report(output, rows, description + done)
    return rows


def _score_fingerprint(cell: Cell, store: CacheStore) -> str | None:
    return next((p.fingerprint for p in make_plan(cell.recipe, store) if p.name == "score"), None)


def _metrics_by_scoring(cells: list[Cell], store: CacheStore) -> dict[str, list[str]]:
    """Every metric the grid needs, by scoring fingerprint: one scoring pass computes them all."""
    grouped: dict[str, list[str]] = {}
    for cell in cells:
        digest = _score_fingerprint(cell, store)
        if digest is not None:
            grouped.setdefault(digest, [])
            if cell.recipe.select.metric not in grouped[digest]:
                grouped[digest].append(cell.recipe.select.metric)
    return grouped


def _print_cells(cells: list[Cell], store: CacheStore) -> dict[str, list[str]]:
    """Print each cell's cached stages; return the metrics each scoring pass computes (:func:`_metrics_by_scoring`)."""
    metrics = _metrics_by_scoring(cells, store)
    console.print(f"{len(cells)} cells")
    for cell in cells:
        plan = make_plan(cell.recipe, store, metrics.get(_score_fingerprint(cell, store) or "", []))
        cached = sum(p.status == "cached" for p in plan)
        console.print(f"  {cell.name}: {cached}/{len(plan)} stages cached")
    return metrics


def row_of(cell: Cell, directory: Path) -> dict[str, Any]:
    """One results.csv row: the grid values, what was removed, quality before/after, cost.

    Quality: each perplexity, each task's ``acc`` with its ``acc_stderr`` (lm-eval's), each suite average.
    """
    results = read_json(directory / "results.json") or {}
    final, dense = results.get("final") or {}, results.get("dense") or {}
    unhealed = results.get("unhealed") or {}
    stages = results.get("stages") or {}
    selection = stages.get("select") or {}
    heal = stages.get("heal") or {}
    row: dict[str, Any] = {"cell": cell.name, **cell.values}
    row["layers"] = final.get("num_layers")
    row["removed"] = len(final.get("removed_layers") or [])
    row["removed_layers"] = " ".join(
        map(str, final.get("removed_layers") or selection.get("removed_source_layers", []))
    )
    for label, source in (("dense", dense), ("unhealed", unhealed), ("final", final)):
        for name, value in (source.get("perplexity") or {}).items():
            row[f"{label}_ppl_{name}"] = round(value["ppl"], 4)
        for task, metrics in (source.get("tasks") or {}).items():
            row[f"{label}_{task}"] = metrics.get("acc")
            row[f"{label}_{task}_stderr"] = metrics.get("acc_stderr")
        for name, value in (source.get("suites") or {}).items():
            row[f"{label}_{name}"] = value.get("value")
    row["heal_tokens"] = heal.get("tokens_seen") if "tokens_seen" in heal else None
    row["seconds"] = round(sum(v or 0 for k, v in (results.get("seconds") or {}).items() if k != "dense"), 2)
    return row


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """``results.csv`` with the union of the rows' columns (in first-seen order)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
