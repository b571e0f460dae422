"""Offline task data: convert the original release files into the schema of lm-eval's own hub dataset.

Each converter reads one dataset in its original release format from a
:class:`~layerprune.data.DataRoot` (the folder :func:`layerprune.data.locate` chose: ``--data-dir``,
``$LAYERPRUNE_DATA`` or the embedded slices; files may be gzipped) and returns rows with exactly
the fields that the lm-eval task's hub dataset has, split by split. :func:`prepare_local_task`
writes them as JSON lines into a local dataset folder whose ``README.md`` declares the same config names as the hub
(``ARC-Easy``, ``winogrande_xl``, ``boolq``, ``anatomy``, …), and returns overrides that
point the lm-eval task's ``dataset_path`` at that folder. The task's prompts, target and
metrics therefore stay lm-eval's.

Counts are checked after conversion: a labels file must align with its data file, and
each split is compared with the count of the official release (a different count is
logged and recorded, since a user may hold another version, e.g. ARC-Challenge files).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprune.data import DataRoot, MissingData
from layerprune.errors import UserError
from layerprune.models.loading import cache_root
from layerprune.records import read_jsonl, read_text_file
from layerprune.registry import Registry
from layerprune.saving import atomic_write_text

logger = logging.getLogger(__name__)

Rows = list[dict[str, Any]]
Splits = dict[str, Rows]
"""Split name (as in the hub dataset: ``test``, ``validation``, ``dev``) → rows."""


@dataclass(frozen=True)
class LocalTask:
    """How one lm-eval task (or group) is served from local files.

    ``convert(root)`` returns ``{config_name: {split: rows}}``; ``config_name`` is the
    hub dataset's config (lm-eval's ``dataset_name``), ``"default"`` where it has none.
    ``overrides`` are lm-eval task-config keys to change, e.g. ``training_split: None``
    where the local copy has no train split. ``expected`` holds the official counts.
    """

    convert: Callable[[DataRoot], dict[str, Splits]]
    expected: dict[str, int] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    note: str = ""


LOCAL_TASKS: Registry[LocalTask] = Registry("local task")


@dataclass
class PreparedTask:
    """A converted task: the lm-eval config overrides, the per-split counts and any caveat of the local form."""

    overrides: dict[str, Any]
    counts: dict[str, int]
    expected: dict[str, int]
    note: str = ""


Converter = Callable[[DataRoot], dict[str, Splits]]


def _register(name: str, convert: Converter, expected: dict[str, int], note: str = "", **overrides: Any) -> None:
    LOCAL_TASKS.add(name, LocalTask(convert, expected, overrides, note))


# ----------------------------------------------------------------------------- reading helpers


def _read_lines(path: Path) -> list[str]:
    return [line for line in read_text_file(path).splitlines() if line.strip()]


def _field(row: dict[str, Any], key: str, path: Path, number: int) -> Any:
    if key not in row:
        raise UserError(f"{path}:{number} has no field {key!r}; is this the original release file?")
    return row[key]


def _with_labels(rows: Rows, labels_path: Path, data_path: Path) -> Iterator[tuple[int, dict[str, Any], str]]:
    labels = _read_lines(labels_path)
    if len(labels) != len(rows):
        raise UserError(f"{labels_path} has {len(labels)} labels but {data_path} has {len(rows)} rows")
    for number, (row, label) in enumerate(zip(rows, labels, strict=True), start=1):
        yield number, row, label.strip()


# ----------------------------------------------------------------------------- converters


def convert_piqa(root: DataRoot) -> dict[str, Splits]:
    """PIQA ``valid.jsonl`` + ``valid-labels.lst`` → baber/piqa rows ``{goal, sol1, sol2, label:int}``."""
    path, labels = root.file("piqa/valid.jsonl"), root.file("piqa/valid-labels.lst")
    rows = []
    for number, row, label in _with_labels(read_jsonl(path), labels, path):
        fields = {key: _field(row, key, path, number) for key in ("goal", "sol1", "sol2")}
        rows.append({**fields, "label": int(label)})
    return {"default": {"validation": rows}}


def split_hellaswag_context(context: str) -> tuple[str, str]:
    """Recover ``(ctx_a, ctx_b)`` from the joined context of the text form.

    The text form stores ``ctx_a + " " + ctx_b`` with ctx_b (the lowercase start of the
    sentence to complete) not capitalised. lm-eval capitalises ctx_b itself, so the tail
    after the last ``". "`` is taken as ctx_b when it starts lowercase; otherwise ctx_b is
    empty (the WikiHow items, whose ctx_b is usually empty). This is a reconstruction.
    """
    match = re.search(r"^(.*[.!?]) ([a-z][^.!?]*)$", context)
    return (match.group(1), match.group(2)) if match else (context, "")


def convert_hellaswag(root: DataRoot) -> dict[str, Splits]:
    """HellaSwag 6-line text form → Rowan/hellaswag rows ``{activity_label, ctx_a, ctx_b, ctx, endings, label:str}``."""
    path = root.file("hellaswag/hellaswag_val_full.txt.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().rstrip("\n").split("\n")
    if len(lines) % 6:
        raise UserError(f"{path} has {len(lines)} lines, not a multiple of 6 (context, label, 4 endings)")
    rows = []
    for start in range(0, len(lines), 6):
        header, label, *endings = lines[start : start + 6]
        activity, sep, context = header.partition(": ")
        if not sep or label not in {"0", "1", "2", "3"}:
            raise UserError(f"{path}:{start + 1} is not a HellaSwag item (context line, label 0-3, 4 endings)")
        ctx_a, ctx_b = split_hellaswag_context(context)
        rows.append(
            {
                "activity_label": activity,
                "ctx_a": ctx_a,
                "ctx_b": ctx_b,
                "ctx": context,
                "endings": endings,
                "label": label,
            }
        )
    return {"default": {"validation": rows}}


def _arc_row(row: dict[str, Any], path: Path, number: int) -> dict[str, Any]:
    question = _field(row, "question", path, number)
    choices = _field(question, "choices", path, number)
    return {
        "id": _field(row, "id", path, number),
        "question": _field(question, "stem", path, number),
        "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
        "answerKey": _field(row, "answerKey", path, number),
    }


def _arc_converter(subset: str) -> Converter:
    def convert(root: DataRoot) -> dict[str, Splits]:
        splits = {}
        for split, suffix in (("test", "Test"), ("validation", "Dev")):
            relative = f"arc/{subset}-{suffix}.jsonl"
            if split == "test" or root.find(relative) is not None:
                path = root.file(relative)
                rows = read_jsonl(path)
                splits[split] = [_arc_row(row, path, n) for n, row in enumerate(rows, start=1)]
        return {subset: splits}

    convert.__doc__ = (
        f"AI2 ``{subset}-{{Test,Dev}}.jsonl`` → allenai/ai2_arc rows "
        "``{id, question, choices{text,label}, answerKey}`` (Dev optional)."
    )
    return convert


def convert_winogrande(root: DataRoot) -> dict[str, Splits]:
    """WinoGrande 1.1 ``dev.jsonl`` + ``dev-labels.lst`` → winogrande_xl rows.

    Fields ``{sentence, option1, option2, answer}``; ``answer`` is taken from the labels file ("1" or "2").
    """
    path, labels = root.file("winogrande/dev.jsonl"), root.file("winogrande/dev-labels.lst")
    rows = []
    for number, row, label in _with_labels(read_jsonl(path), labels, path):
        if label not in {"1", "2"} or "_" not in _field(row, "sentence", path, number):
            raise UserError(f"{path}:{number}: expected a sentence with '_' and label 1 or 2, got label {label!r}")
        fields = {key: _field(row, key, path, number) for key in ("sentence", "option1", "option2")}
        rows.append({**fields, "answer": label})
    return {"winogrande_xl": {"validation": rows}}


def convert_boolq(root: DataRoot) -> dict[str, Splits]:
    """SuperGLUE BoolQ ``val.jsonl`` → aps/super_glue boolq rows ``{question, passage, idx, label: 0=False 1=True}``."""
    path = root.file("boolq/val.jsonl")
    rows = []
    for number, row in enumerate(read_jsonl(path), start=1):
        label = str(_field(row, "label", path, number)).lower()
        if label not in {"true", "false"}:
            raise UserError(f"{path}:{number}: label must be true or false, got {row['label']!r}")
        fields = {key: _field(row, key, path, number) for key in ("question", "passage", "idx")}
        rows.append({**fields, "label": int(label == "true")})
    return {"boolq": {"validation": rows}}


def convert_openbookqa(root: DataRoot) -> dict[str, Splits]:
    """OpenBookQA Main ``test.jsonl`` → allenai/openbookqa main rows ``{id, question_stem, choices, answerKey}``."""
    path = root.file("openbookqa/test.jsonl")
    rows = []
    for number, row in enumerate(read_jsonl(path), start=1):
        arc_like = _arc_row(row, path, number)
        rows.append(
            {
                "id": arc_like["id"],
                "question_stem": arc_like["question"],
                "choices": arc_like["choices"],
                "answerKey": arc_like["answerKey"],
            }
        )
    return {"main": {"test": rows}}


def _read_mmlu_csv(path: Path, subject: str) -> Rows:
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for number, record in enumerate(csv.reader(handle), start=1):
            if len(record) != 6 or record[5] not in {"A", "B", "C", "D"}:
                raise UserError(f"{path}:{number}: expected question,A,B,C,D,answer-letter")
            rows.append(
                {"question": record[0], "subject": subject, "choices": record[1:5], "answer": "ABCD".index(record[5])}
            )
    return rows


def convert_mmlu(root: DataRoot) -> dict[str, Splits]:
    """MMLU ``test/*_test.csv`` + ``dev/*_dev.csv`` → cais/mmlu rows, one config per subject.

    Fields ``{question, subject, choices: [A, B, C, D], answer: 0-3}``.
    """
    test_dir = root.file("mmlu/test")
    files = sorted(test_dir.glob("*_test.csv"))
    if not files:
        raise MissingData(f"no MMLU test files (*_test.csv) found in {test_dir}")
    configs = {}
    for test_file in files:
        subject = test_file.name.removesuffix("_test.csv")
        dev_file = root.file(f"mmlu/dev/{subject}_dev.csv")
        configs[subject] = {"test": _read_mmlu_csv(test_file, subject), "dev": _read_mmlu_csv(dev_file, subject)}
    return configs


_NO_TRAIN = {"training_split": None}
_register("piqa", convert_piqa, {"validation": 1838}, **_NO_TRAIN)
_HELLASWAG_NOTE = "text form: ctx_a/ctx_b split reconstructed (see split_hellaswag_context); ind/source_id absent"
_register("hellaswag", convert_hellaswag, {"validation": 10042}, _HELLASWAG_NOTE, **_NO_TRAIN)
_register("arc_easy", _arc_converter("ARC-Easy"), {"test": 2376, "validation": 570}, **_NO_TRAIN)
_register("arc_challenge", _arc_converter("ARC-Challenge"), {"test": 1172, "validation": 299}, **_NO_TRAIN)
_register("winogrande", convert_winogrande, {"validation": 1267}, **_NO_TRAIN)
_register("boolq", convert_boolq, {"validation": 3270}, **_NO_TRAIN)
_register("openbookqa", convert_openbookqa, {"test": 500}, training_split=None, validation_split=None)
_register("mmlu", convert_mmlu, {"test": 14042, "dev": 285})


# ----------------------------------------------------------------------------- writing


def count_rows(configs: dict[str, Splits]) -> dict[str, int]:
    """Rows per split, summed over configs (MMLU's 57 subjects add up to one test count)."""
    counts: dict[str, int] = {}
    for splits in configs.values():
        for split, rows in splits.items():
            counts[split] = counts.get(split, 0) + len(rows)
    return counts


def check_counts(task: str, counts: dict[str, int], expected: dict[str, int]) -> None:
    """Log where a split's count differs from the official release (the counts are recorded either way)."""
    for split, count in counts.items():
        if split in expected and count != expected[split]:
            logger.warning(
                "%s %s: %d rows after conversion; the official release has %d", task, split, count, expected[split]
            )


def local_cache_dir(root: DataRoot) -> Path:
    """Where converted copies of ``root`` live: one folder per data directory, reused across runs."""
    digest = hashlib.sha256(str(root.path.resolve()).encode()).hexdigest()[:12]
    return cache_root() / "lm_eval_data" / digest


def write_dataset(configs: dict[str, Splits], target: Path) -> None:
    """Write a local Hugging Face dataset folder: JSON lines per config/split plus a README declaring configs.

    Files are rewritten only when their content changes, so the ``datasets`` cache stays valid.
    """
    card = ["---", "configs:"]
    for config, splits in configs.items():
        card += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            relative = f"{config}/{split}.jsonl"
            _write_if_changed(target / relative, "".join(json.dumps(row) + "\n" for row in rows))
            card += [f"  - split: {split}", f"    path: {relative}"]
    _write_if_changed(target / "README.md", "\n".join([*card, "---", ""]))


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def prepare_local_task(task: str, root: DataRoot) -> PreparedTask:
    """Convert ``task``'s files in ``root`` and return overrides pointing lm-eval at the local copy.

    From the embedded slices the official counts do not apply: the note says how many items the slice holds.
    """
    local = LOCAL_TASKS.get(task)
    configs = local.convert(root)
    counts = count_rows(configs)
    expected, note = local.expected, local.note
    if root.manifest is not None:
        expected, note = {}, f"embedded slice: {counts} of the official {local.expected}"
    check_counts(task, counts, expected)
    target = local_cache_dir(root) / task
    write_dataset(configs, target)
    return PreparedTask({"dataset_path": str(target), **local.overrides}, counts, local.expected, note)
