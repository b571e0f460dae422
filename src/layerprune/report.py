"""Reports: figures and a Markdown summary from ``layerprune score`` and ``layerprune eval`` outputs.

The report reads the files the other stages write (scores JSON, results JSON), so it can be
rebuilt at any time without a model:

* ``similarity-<kind>.png``: heatmaps of the cosine / linear-CKA similarity between the
  hidden states (state 0 = embeddings, state i = output of layer i−1), as in ShortGPT's and
  Sliding Layer Merging's figures;
* ``metrics.png``: every metric's per-layer importance, min–max normalised, one line each;
* ``angular.png``: Gromov et al.'s d(l, n) table (block start l × block size n);
* ``report.md``: the removal order of each metric and, given results files, the
  evaluation numbers side by side with deltas against the first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from layerprune.errors import UserError
from layerprune.evaluation.results import read_results, summary_rows
from layerprune.records import read_json
from layerprune.saving import atomic_directory, atomic_write_text

_STDERR = "_stderr"  # a study column's standard error: ``<column>_stderr``


def write_report(
    output_dir: str | Path,
    scores_path: str | Path | None = None,
    results_paths: Sequence[str | Path] = (),
    remove: int = 8,
    overwrite: bool = False,
) -> Path:
    """Write figures and ``report.md`` for a scores file and/or results files into ``output_dir``."""
    if scores_path is None and not results_paths:
        raise UserError("a report needs --scores and/or --results files")
    scores = _read_scores(scores_path) if scores_path else None
    runs = [read_results(path) for path in results_paths]
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        sections = report_sections(tmp, scores, runs, [str(path) for path in results_paths], remove)
        atomic_write_text(tmp / "report.md", "\n".join(["# layerprune report\n", *sections]))
    return Path(output_dir)


def report_sections(
    directory: Path, scores: dict[str, Any] | None, runs: list[dict[str, Any]], names: list[str], remove: int
) -> list[str]:
    """The Markdown sections for a scores dict and results dicts; their figures are written to ``directory``."""
    sections = []
    if scores is not None:
        sections.append(_scores_section(scores, remove))
        _plot_scores(scores, directory)
    if runs:
        sections.append(_results_section(runs, names))
    return sections


def write_run_report(directory: Path, inputs: dict[str, Path], title: str) -> Path:
    """``report.md`` of a pipeline run from its stage directories (``inputs``: stage name → directory)."""
    scores = _read_scores(inputs["score"] / "scores.json") if "score" in inputs else None
    stages = (("dense", "dense"), ("unhealed", "unhealed"), ("final", "evaluate"))
    named = [(name, inputs[stage] / "results.json") for name, stage in stages if stage in inputs]
    runs = [read_results(path) for _, path in named]
    removed = runs[-1]["source_num_layers"] - runs[-1]["num_layers"] if runs and runs[-1]["source_num_layers"] else 8
    sections = report_sections(directory, scores, runs, [name for name, _ in named], max(removed, 1))
    sections += [text for name, write in _STAGE_SECTIONS.items() if name in inputs and (text := write(inputs[name]))]
    curve = next(iter(sorted(inputs["heal"].rglob("loss_curve.json"))), None) if "heal" in inputs else None
    if curve is not None:
        plot_loss_curve(json.loads(curve.read_text()), directory / "loss.png")
        sections.append("## Healing\n\n![training and validation loss](loss.png)\n")
    atomic_write_text(directory / "report.md", "\n".join([f"# {title}\n", *sections]))
    return directory / "report.md"


def _width_section(directory: Path) -> str:
    """Per-layer ratio, heads and channels of a width stage (its ``width.json``)."""
    width = read_json(directory / "width.json")
    before, after = width["parameters"]
    lines = [f"## Width pruning\n\nParameters {before:,} → {after:,} ({1 - after / before:.1%} fewer).\n"]
    lines += ["| layer | ratio | heads (KV) | FFN channels |", "|---|---|---|---|"]
    for index, (ratio, w) in enumerate(zip(width["ratios"], width["widths"], strict=True)):
        heads = f"{w['num_attention_heads']} ({w['num_key_value_heads']})"
        lines.append(f"| {index} | {ratio:.3f} | {heads} | {w['intermediate_size']} |")
    return "\n".join(lines) + "\n"


def _sparsity_section(directory: Path) -> str:
    """Per-layer allocated and achieved sparsity of a sparsify stage (its ``sparsity.json``)."""
    sparsity = read_json(directory / "sparsity.json")
    lines = ["## Sparsity\n", "| layer | allocated | zeros |", "|---|---|---|"]
    for index, (wanted, got) in enumerate(zip(sparsity["sparsities"], sparsity["achieved"], strict=True)):
        lines.append(f"| {index} | {wanted:.3f} | {got:.3f} |")
    if sparsity.get("function"):
        lines.append(f"\nDSA allocation function: `{json.dumps(sparsity['function'])}`")
    return "\n".join(lines) + "\n"


def _gguf_section(directory: Path) -> str:
    """File size before/after and each kept block's quantization types of a direct GGUF surgery (``gguf.json``)."""
    gguf = read_json(directory / "gguf.json") if (directory / "gguf.json").is_file() else None
    if gguf is None:
        return ""
    before, after = gguf["file_bytes"]
    lines = [
        "## GGUF\n",
        f"Blocks {gguf['layers'][0]} → {gguf['layers'][1]} (removed source layers "
        f"{gguf['removed_source_layers']}); file {before:,} → {after:,} bytes ({1 - after / before:.1%} smaller). "
        "Kept blocks are copied byte for byte in their quantization types.\n",
        "| block | tensor types |",
        "|---|---|",
    ]
    lines += [f"| {block} | {', '.join(types)} |" for block, types in gguf["block_types"].items()]
    return "\n".join(lines) + "\n"


_STAGE_SECTIONS = {"select": _gguf_section, "width": _width_section, "sparsify": _sparsity_section}


def plot_loss_curve(curve: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Training and validation loss by step (``loss_curve.json`` of a heal)."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for split, points in curve.items():
        if points:
            axes.plot([p["step"] for p in points], [p["loss"] for p in points], marker=".", label=split)
    axes.set(title="healing loss", xlabel="step", ylabel="loss")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _read_scores(path: str | Path) -> dict[str, Any]:
    scores = read_json(Path(path))
    if not isinstance(scores, dict) or "metrics" not in scores:
        raise UserError(f"{path} is not a layerprune scores file")
    return scores


def _scores_section(scores: dict[str, Any], remove: int) -> str:
    lines = [f"## Scores of {scores['model']} ({scores['num_layers']} layers)\n"]
    if scores.get("calibration"):
        lines.append(f"Calibration: `{json.dumps(scores['calibration'])}`\n")
    lines += [f"| metric | first {remove} to remove | figure |", "|---|---|---|"]
    for name, record in scores["metrics"].items():
        order = record["removal_order"][:remove]
        lines.append(f"| {name} | {', '.join(map(str, sorted(order)))} | metrics.png |")
    figures = [f"![{kind} similarity](similarity-{kind}.png)" for kind in scores.get("similarity", {})]
    figures.append("![per-layer importance](metrics.png)")
    if "angular" in scores["metrics"] and scores["metrics"]["angular"].get("blocks"):
        figures.append("![angular distance by block](angular.png)")
    return "\n".join(lines) + "\n\n" + "\n".join(figures) + "\n"


def _results_section(runs: list[dict[str, Any]], names: list[str]) -> str:
    rows = [summary_rows(run) for run in runs]
    labels = list(dict.fromkeys(label for row in rows for label in row))
    header = ["metric", *(f"{name}" if i == 0 else f"{name} (Δ)" for i, name in enumerate(names))]
    lines = ["## Evaluation\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        base = rows[0].get(label)
        cells = [_cell(row.get(label), base if i else None) for i, row in enumerate(rows)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None, base: float | None) -> str:
    if value is None:
        return "–"
    text = f"{value:.4g}"
    return f"{text} ({value - base:+.4g})" if base is not None else text


def _plot_scores(scores: dict[str, Any], directory: Path) -> None:
    for kind, matrix in scores.get("similarity", {}).items():
        _heatmap(
            matrix, f"{kind} similarity between hidden states", "state", "state", directory / f"similarity-{kind}.png"
        )
    _plot_metrics(scores["metrics"], directory / "metrics.png")
    blocks = scores["metrics"].get("angular", {}).get("blocks")
    if blocks:
        width = max(len(values) for values in blocks.values())
        rows = [values + [float("nan")] * (width - len(values)) for _, values in sorted(blocks.items(), key=_by_n)]
        _heatmap(
            rows,
            "angular distance d(l, n)",
            "block start l",
            "block size n",
            directory / "angular.png",
            first_row=int(min(blocks, key=int)),
        )


def _by_n(item: tuple[str, list[float]]) -> int:
    return int(item[0])


def _heatmap(matrix: list[list[float]], title: str, xlabel: str, ylabel: str, path: Path, first_row: int = 0) -> None:
    figure, axes = plt.subplots(figsize=(6, 5))
    image = axes.imshow(
        matrix,
        cmap="viridis",
        aspect="auto",
        origin="lower",
        extent=(-0.5, len(matrix[0]) - 0.5, first_row - 0.5, first_row + len(matrix) - 0.5),
    )
    figure.colorbar(image, ax=axes)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_metrics(metrics: dict[str, Any], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 4))
    for name, record in metrics.items():
        values = record["scores"]
        low, high = min(values), max(values)
        axes.plot([(v - low) / (high - low) if high > low else 0.0 for v in values], marker=".", label=name)
    axes.set(title="per-layer importance (min–max normalised; low = remove first)", xlabel="layer", ylabel="importance")
    axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_study_report(directory: Path, rows: list[dict[str, Any]], title: str) -> Path:
    """``results.md`` (the table and the figures) of a study from its ``results.csv`` rows."""
    quality = _quality_column(rows)
    figures = []
    if quality:
        _plot_quality(rows, quality, directory / "quality.png")
        _plot_cost(rows, quality, directory / "cost.png")
        _plot_final(rows, directory / "final.png")
        figures += [
            "![quality against layers removed](quality.png)",
            "![cost against quality](cost.png)",
            "![each cell's final quality, ± its standard error, dense dashed](final.png)",
        ]
        if any(row.get(quality.replace("final_", "unhealed_")) is not None for row in rows):
            _plot_healing(rows, quality, directory / "healing.png")
            figures.append("![before and after healing](healing.png)")
    _plot_removed(rows, directory / "layers.png")
    figures.append("![layers each cell removed](layers.png)")
    text = "\n".join([f"# {title}\n", _markdown_table(rows), "", *figures, ""])
    atomic_write_text(directory / "results.md", text)
    return directory / "results.md"


def _quality_column(rows: list[dict[str, Any]]) -> str | None:
    columns = _final_columns(rows)
    preferred = [c for c in columns if "_ppl_" in c] or columns
    return preferred[0] if preferred else None


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per row; a column with a ``<column>_stderr`` companion is shown as ``value ± stderr``."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    columns = [c for c in keys if c != "removed_layers" and not (c.endswith(_STDERR) and c[: -len(_STDERR)] in keys)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_table_cell(row, column) for column in columns) + " |")
    return "\n".join(lines)


def _table_cell(row: dict[str, Any], column: str) -> str:
    value, stderr = row.get(column), row.get(column + _STDERR)
    if value is None:
        return "–"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{text} ± {stderr:.2g}" if isinstance(stderr, float) else text


def _final_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The after-healing quality columns (perplexities, task accuracies, suite averages), without stderrs."""
    keys = dict.fromkeys(k for row in rows for k in row)
    return [k for k in keys if k.startswith("final_") and not k.endswith(_STDERR)]


def _plot_final(rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per final quality column: a bar per cell with its standard error, the dense model dashed."""
    columns = _final_columns(rows)
    figure, panels = plt.subplots(1, len(columns), figsize=(max(6, 0.45 * len(rows) * len(columns)), 4.5))
    positions = list(range(len(rows)))
    for axes, column in zip(panels if len(columns) > 1 else [panels], columns, strict=True):
        values = [float("nan") if row.get(column) is None else row[column] for row in rows]
        errors = [row.get(column + _STDERR) or 0.0 for row in rows]
        axes.bar(positions, values, yerr=errors if any(errors) else None, capsize=2)
        dense = next((row[key] for row in rows if (key := column.replace("final_", "dense_", 1)) in row), None)
        if dense is not None:
            axes.axhline(dense, linestyle="--", color="black", label=f"dense {dense:.4g}")
            axes.legend(fontsize="x-small")
        axes.set_xticks(positions, [row["cell"] for row in rows], rotation=70, ha="right", fontsize="x-small")
        axes.set_title(column.removeprefix("final_"), fontsize="small")
        if "_ppl_" in column:
            axes.set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _series(row: dict[str, Any]) -> str:
    """A cell's label without its removal amount (so that one selection's ratios form one line)."""
    grid = [k for k in row if "." in k and not k.endswith((".ratio", ".num_layers"))]
    return ", ".join(f"{row[k]}" for k in grid) or row["cell"]


def _plot_quality(rows: list[dict[str, Any]], column: str, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4))
    for label in dict.fromkeys(map(_series, rows)):
        points = sorted((r["removed"], r[column]) for r in rows if _series(r) == label and r.get(column) is not None)
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.set(title=f"{column} against layers removed", xlabel="layers removed", ylabel=column)
    _finish_axes(figure, axes, path, log="_ppl_" in column)


def _plot_cost(rows: list[dict[str, Any]], column: str, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4))
    for row in rows:
        if row.get(column) is not None:
            axes.scatter(row["seconds"], row[column])
            axes.annotate(row["cell"], (row["seconds"], row[column]), fontsize="x-small")
    axes.set(title="cost against quality", xlabel="wall time of the cell's own stages (s)", ylabel=column)
    _finish_axes(figure, axes, path, log="_ppl_" in column, legend=False)


def _plot_healing(rows: list[dict[str, Any]], column: str, path: Path) -> None:
    before = column.replace("final_", "unhealed_")
    figure, axes = plt.subplots(figsize=(max(6, len(rows) * 0.6), 4))
    positions = range(len(rows))
    axes.bar([p - 0.2 for p in positions], [r.get(before) or 0 for r in rows], width=0.4, label="before healing")
    axes.bar([p + 0.2 for p in positions], [r.get(column) or 0 for r in rows], width=0.4, label="after healing")
    axes.set_xticks(list(positions), [r["cell"] for r in rows], rotation=60, ha="right", fontsize="x-small")
    axes.set(title="before and after healing", ylabel=column)
    _finish_axes(figure, axes, path, log="_ppl_" in column)


def _plot_removed(rows: list[dict[str, Any]], path: Path) -> None:
    removed = [[int(i) for i in str(r.get("removed_layers") or "").split()] for r in rows]
    width = max((max(layers) + 1 for layers in removed if layers), default=1)
    matrix = [[1.0 if i in layers else 0.0 for i in range(width)] for layers in removed]
    figure, axes = plt.subplots(figsize=(max(6, width * 0.25), max(2.5, len(rows) * 0.3)))
    axes.imshow(matrix, cmap="Greys", aspect="auto", vmin=0, vmax=1)
    axes.set_yticks(range(len(rows)), [r["cell"] for r in rows], fontsize="x-small")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(title="removed layers (black) by cell", xlabel="source layer")
    _finish_axes(figure, axes, path, legend=False)


def _finish_axes(figure, axes, path: Path, log: bool = False, legend: bool = True) -> None:
    if log:
        axes.set_yscale("log")
    if legend:
        axes.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
