"""Converters: the lm-eval hub schema and the official counts from the files in shared/data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest

from evaluation_support import data_dir
from layerprune.data import DataRoot, MissingData
from layerprune.errors import UserError
from layerprune.evaluation.local_data import (
    LOCAL_TASKS,
    count_rows,
    prepare_local_task,
    split_hellaswag_context,
)

# task → (hub config name, {split: official count}, fields of one row in lm-eval's hub dataset)
EXPECTED = {
    "piqa": ("default", {"validation": 1838}, {"goal", "sol1", "sol2", "label"}),
    "arc_easy": ("ARC-Easy", {"test": 2376, "validation": 570}, {"id", "question", "choices", "answerKey"}),
    "winogrande": ("winogrande_xl", {"validation": 1267}, {"sentence", "option1", "option2", "answer"}),
    "boolq": ("boolq", {"validation": 3270}, {"question", "passage", "idx", "label"}),
    "openbookqa": ("main", {"test": 500}, {"id", "question_stem", "choices", "answerKey"}),
    "hellaswag": ("default", {"validation": 10042}, {"activity_label", "ctx_a", "ctx_b", "ctx", "endings", "label"}),
    "mmlu": ("anatomy", {"test": 14042, "dev": 285}, {"question", "subject", "choices", "answer"}),
}


@pytest.mark.shared_data
@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_converter_schema_and_count(task):
    config, counts, fields = EXPECTED[task]
    configs = LOCAL_TASKS.get(task).convert(shared_root())
    assert count_rows(configs) == counts
    first_split = next(iter(configs[config].values()))
    assert set(first_split[0]) == fields


def shared_root() -> DataRoot:
    return DataRoot(data_dir(), "$LAYERPRUNE_DATA")


def test_every_registered_local_task_is_tested():
    assert set(LOCAL_TASKS.names()) == set(EXPECTED) | {"arc_challenge"}


@pytest.mark.shared_data
def test_labels_are_converted_to_the_hub_types():
    source = shared_root()
    boolq = LOCAL_TASKS.get("boolq").convert(source)["boolq"]["validation"]
    assert sum(row["label"] for row in boolq) == 2033  # "true" → 1 (PROVENANCE: 2,033 true)
    piqa = LOCAL_TASKS.get("piqa").convert(source)["default"]["validation"]
    assert sum(row["label"] for row in piqa) == 928
    wino = LOCAL_TASKS.get("winogrande").convert(source)["winogrande_xl"]["validation"]
    assert sum(row["answer"] == "2" for row in wino) == 639
    mmlu = LOCAL_TASKS.get("mmlu").convert(source)
    assert len(mmlu) == 57 and len(mmlu["anatomy"]["test"]) == 135
    assert all(len(row["choices"]) == 4 and row["answer"] in range(4) for row in mmlu["anatomy"]["test"])


def test_hellaswag_context_split_recovers_ctx_b():
    assert split_hellaswag_context("A man is sitting on a roof. he") == ("A man is sitting on a roof.", "he")
    assert split_hellaswag_context("How to do it. Pay attention.") == ("How to do it. Pay attention.", "")


@pytest.mark.shared_data
def test_arc_challenge_uses_the_arc_easy_format(tmp_path):
    (tmp_path / "arc").mkdir()
    shutil.copy(data_dir() / "arc" / "ARC-Easy-Test.jsonl", tmp_path / "arc" / "ARC-Challenge-Test.jsonl")
    configs = LOCAL_TASKS.get("arc_challenge").convert(DataRoot(tmp_path, "test"))
    assert count_rows(configs) == {"test": 2376}  # no Dev file: the validation split is simply absent
    assert set(configs) == {"ARC-Challenge"}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(MissingData, match=r"arc/ARC-Challenge-Test\.jsonl"):
        LOCAL_TASKS.get("arc_challenge").convert(DataRoot(tmp_path, "test"))
    with pytest.raises(UserError, match=r"piqa/valid\.jsonl"):
        prepare_local_task("piqa", DataRoot(tmp_path, "test"))


def test_malformed_files_give_clear_errors(tmp_path):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\nnot json\n')
    (tmp_path / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(UserError, match=r"valid\.jsonl:2: not valid JSON"):
        LOCAL_TASKS.get("piqa").convert(DataRoot(tmp_path, "test"))
    (tmp_path / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    with pytest.raises(UserError, match=r"has 2 labels but .* has 1 rows"):
        LOCAL_TASKS.get("piqa").convert(DataRoot(tmp_path, "test"))
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "val.jsonl").write_text(json.dumps({"question": "q", "passage": "p", "idx": 0}) + "\n")
    with pytest.raises(UserError, match="has no field 'label'"):
        LOCAL_TASKS.get("boolq").convert(DataRoot(tmp_path, "test"))


@pytest.mark.shared_data
def test_prepared_folder_loads_with_the_hub_config_name(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path))
    prepared = prepare_local_task("arc_easy", shared_root())
    assert prepared.counts == {"test": 2376, "validation": 570}
    assert prepared.overrides["training_split"] is None
    loaded = datasets.load_dataset(prepared.overrides["dataset_path"], "ARC-Easy")
    assert loaded["test"].num_rows == 2376
    assert loaded["test"][0]["choices"]["label"] == ["A", "B", "C", "D"]
    before = {p: p.stat().st_mtime_ns for p in Path(prepared.overrides["dataset_path"]).rglob("*.jsonl")}
    prepare_local_task("arc_easy", shared_root())
    assert {p: p.stat().st_mtime_ns for p in before} == before  # unchanged content is not rewritten
