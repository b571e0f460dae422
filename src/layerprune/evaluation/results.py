"""One results schema for every evaluation, its table, and side-by-side comparison.

A results file (``layerprune eval --output results.json``) is a JSON object::

    {"schema": "layerprune.eval/1",
     "model": spec, "source": dense source spec, "num_layers", "source_num_layers", "removed_layers",
     "tasks": {task: {acc, acc_stderr, acc_norm, acc_norm_stderr, samples}},
     "suites": {suite: {value, tasks: {task: metric}, missing, reference}},
     "perplexity": {name: {ppl, nll, predicted_tokens, windows, seq_len, bos, source, join, ...}},
     "speed": {model: {...}, source: {...}, ratios: {...}} or null,
     "data": {task: {source: local|hub, counts, ...}}, "settings": {...},
     "versions": {package: version}, "seed", "created", "wall_time_s": {stage: seconds}}
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from rich.table import Table
from transformers import PreTrainedModel

from layerprune.errors import UserError
from layerprune.provenance import get_provenance, package_versions
from layerprune.records import read_json
from layerprune.saving import write_json

SCHEMA = "layerprune.eval/1"


def new_results(model: PreTrainedModel, model_name: str | None, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """An empty results dict for ``model``, with its provenance, the settings and package versions."""
    provenance = get_provenance(model)
    return {
        "schema": SCHEMA,
        "model": model_name or provenance.source,
        "source": provenance.source,
        "num_layers": len(provenance.layer_map),
        "source_num_layers": provenance.source_num_layers,
        "removed_layers": provenance.removed_layers,
        "tasks": {},
        "suites": {},
        "perplexity": {},
        "speed": None,
        "data": {},
        "settings": settings,
        "versions": package_versions(),
        "seed": seed,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_time_s": {},
    }


def write_results(path: str | Path, results: dict[str, Any]) -> None:
    write_json(path, results)


def read_results(path: str | Path) -> dict[str, Any]:
    """Load a results file, checking that it is one (a :class:`UserError` names the file otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    results = read_json(path)
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        raise UserError(f"{path} is not a layerprune results file (schema {SCHEMA})")
    _check_shape(results, path)
    return results


_SHAPE: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "num_layers": (int,),
    "source_num_layers": (int, type(None)),
    "tasks": (dict,),
    "suites": (dict,),
    "perplexity": (dict,),
    "speed": (dict, type(None)),
}


_KIND_NAMES = {str: "a string", int: "an integer", dict: "a mapping", type(None): "null"}


def _check_shape(results: dict[str, Any], path: Path) -> None:
    """The fields the tables read, with their kinds (a hand-edited or truncated file is a :class:`UserError`)."""
    for key, kinds in _SHAPE.items():
        if key not in results:
            raise UserError(f"{path}: a results file needs {key!r} (it has {', '.join(results) or 'nothing'})")
        if not isinstance(results[key], kinds) or isinstance(results[key], bool):
            kind = " or ".join(_KIND_NAMES[k] for k in kinds)
            raise UserError(f"{path}: {key} should be {kind}, got {results[key]!r}")
    for name, entry in results["perplexity"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("ppl"), int | float):
            raise UserError(f"{path}: perplexity.{name} should hold a number 'ppl', got {entry!r}")
    for section in ("tasks", "suites"):
        for name, entry in results[section].items():
            if not isinstance(entry, dict):
                raise UserError(f"{path}: {section}.{name} should be a mapping, got {entry!r}")


def summary_rows(results: dict[str, Any]) -> dict[str, float | None]:
    """The headline numbers of a results dict, by row label, in display order."""
    rows: dict[str, float | None] = {"layers": results["num_layers"]}
    speed = results.get("speed") or {}
    if "model" in speed:
        rows["parameters (M)"] = speed["model"]["parameters"] / 1e6
    for task, metrics in results["tasks"].items():
        for metric in ("acc", "acc_norm"):
            if metrics.get(metric) is not None:
                rows[f"{task} {metric}"] = metrics[metric]
    for suite, average in results["suites"].items():
        partial = f" (without {', '.join(average['missing'])})" if average["missing"] else ""
        rows[f"{suite} average{partial}"] = average["value"]
    for name, ppl in results["perplexity"].items():
        rows[f"ppl {name}"] = ppl["ppl"]
    rows.update(_speed_rows(speed))
    return rows


def _speed_rows(speed: dict[str, Any]) -> dict[str, float | None]:
    if "model" not in speed:
        return {}
    model = speed["model"]
    rows = {
        "GFLOPs/token": model["flops_per_token"] / 1e9,
        "prefill latency (ms)": model["prefill_latency_s"] * 1e3,
        "decode tokens/s": model["decode_tokens_per_s"],
        "peak memory (MiB)": model["peak_memory_bytes"] / 2**20 if model["peak_memory_bytes"] else None,
    }
    for name, value in speed.get("ratios", {}).items():
        rows[f"{name.replace('_', ' ')} vs source"] = value
    return rows


def _format(value: float | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:,.2f}"


def results_table(results: dict[str, Any]) -> Table:
    """A two-column table (metric, value) with stderrs next to task metrics."""
    table = Table(title=f"{results['model']} ({results['num_layers']}/{results['source_num_layers']} layers)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in summary_rows(results).items():
        task, _, metric = label.rpartition(" ")
        stderr = results["tasks"].get(task, {}).get(f"{metric}_stderr")
        table.add_row(label, _format(value) + (f" ± {stderr:.4f}" if stderr is not None else ""))
    return table


def compare_table(runs: list[dict[str, Any]], names: list[str]) -> Table:
    """Models side by side; each model after the first also gets a Δ column against the first."""
    table = Table(title="comparison (Δ against the first)")
    table.add_column("metric")
    for index, name in enumerate(names):
        table.add_column(name, justify="right")
        if index:
            table.add_column("Δ", justify="right")
    rows = [summary_rows(run) for run in runs]
    labels = list(dict.fromkeys(label for row in rows for label in row))
    for label in labels:
        base = rows[0].get(label)
        cells = []
        for index, row in enumerate(rows):
            value = row.get(label)
            cells.append(_format(value))
            if index:
                cells.append(_format(value - base) if value is not None and base is not None else "–")
        table.add_row(label, *cells)
    return table
