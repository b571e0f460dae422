"""lm-eval in-process on a tiny model and local data: results equal lm-eval's own run on the same data."""

from __future__ import annotations

import json

import lm_eval
import pytest
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks._yaml_loader import load_yaml

from evaluation_support import data_dir, tiny_lm, tiny_tokenizer
from layerprune.errors import UserError
from layerprune.evaluation.harness import HarnessOptions, check_task_names, run_tasks, task_manager

LIMIT = 6


@pytest.fixture(scope="module")
def manager():
    return task_manager()


def lm_eval_direct(model, tokenizer, manager, tmp_path):
    """lm-eval's own arc_easy config, reading an independently written JSON copy of ARC-Easy-Test."""
    rows = []
    for line in (data_dir() / "arc" / "ARC-Easy-Test.jsonl").read_text().splitlines():
        item = json.loads(line)
        choices = item["question"]["choices"]
        rows.append(
            {
                "id": item["id"],
                "question": item["question"]["stem"],
                "answerKey": item["answerKey"],
                "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
            }
        )
    path = tmp_path / "arc_easy_test.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = load_yaml(manager.task_index["arc_easy"].yaml_path)
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {"test": str(path)}},
        training_split=None,
        validation_split=None,
    )
    output = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4),
        tasks=[config],
        limit=LIMIT,
        task_manager=manager,
        log_samples=False,
        bootstrap_iters=1000,
    )
    return output["results"]["arc_easy"]


def test_local_task_matches_lm_eval_direct(manager, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path / "cache"))
    model, tokenizer = tiny_lm(), tiny_tokenizer()
    run = run_tasks(model, tokenizer, ["arc_easy"], HarnessOptions(limit=LIMIT, batch_size=4), str(data_dir()))
    ours = run.tasks["arc_easy"]
    direct = lm_eval_direct(model, tokenizer, manager, tmp_path)
    assert ours["samples"] == LIMIT
    assert ours["acc"] == direct["acc,none"]
    assert ours["acc_norm"] == direct["acc_norm,none"]
    assert ours["acc_stderr"] == pytest.approx(direct["acc_stderr,none"])
    assert run.data["arc_easy"]["source"] == "local"
    assert run.data["arc_easy"]["counts"] == {"test": 2376, "validation": 570}


def test_unknown_task_suggests_the_closest(manager):
    with pytest.raises(UserError, match="Did you mean 'hellaswag'"):
        check_task_names(["helaswag"], manager)


def test_missing_local_files_fail_or_are_skipped(tmp_path):
    model, tokenizer = tiny_lm(), tiny_tokenizer()
    with pytest.raises(UserError, match=r"ARC-Challenge-Test\.jsonl"):
        run_tasks(model, tokenizer, ["arc_challenge"], HarnessOptions(limit=1), str(tmp_path))
    with pytest.raises(UserError, match="no task left"):
        run_tasks(model, tokenizer, ["arc_challenge"], HarnessOptions(limit=1, skip_missing=True), str(tmp_path))


def test_hub_task_offline_points_to_data_dir(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="pass --data-dir"):
        run_tasks(tiny_lm(), tiny_tokenizer(), ["piqa"], HarnessOptions(limit=1))
