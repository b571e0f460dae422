"""lm-eval in-process on a tiny model and local data: results equal lm-eval's own run on the same data."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks._yaml_loader import load_yaml
from transformers import AutoModelForCausalLM

from evaluation_support import data_dir, tiny_lm, tiny_tokenizer
from layerprune.cli import main
from layerprune.config import ConfigError
from layerprune.errors import UserError
from layerprune.evaluation import harness
from layerprune.evaluation.harness import HarnessOptions, check_task_names, run_tasks, task_manager, task_specs

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


@pytest.mark.shared_data
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
    assert run.data["arc_easy"]["source"] == "--data-dir"
    assert run.data["arc_easy"]["counts"] == {"test": 2376, "validation": 570}


def test_unknown_task_suggests_the_closest(manager):
    with pytest.raises(UserError, match="Did you mean 'hellaswag'"):
        check_task_names(["helaswag"], manager)


def test_missing_local_files_fail_or_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LAYERPRUNE_DATA", raising=False)
    model, tokenizer = tiny_lm(), tiny_tokenizer()
    with pytest.raises(UserError, match=r"ARC-Challenge-Test\.jsonl"):
        run_tasks(model, tokenizer, ["arc_challenge"], HarnessOptions(limit=1), str(tmp_path))
    with pytest.raises(UserError, match="no task left"):
        run_tasks(model, tokenizer, ["arc_challenge"], HarnessOptions(limit=1, skip_missing=True), str(tmp_path))


def test_task_offline_without_local_files_names_the_variable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LAYERPRUNE_DATA", raising=False)
    with pytest.raises(
        UserError,
        match=r"no local copy of boolq .*\$LAYERPRUNE_DATA \(not set\).*HF_HUB_OFFLINE=1.*set LAYERPRUNE_DATA",
    ):
        run_tasks(tiny_lm(), tiny_tokenizer(), ["boolq"], HarnessOptions(limit=1))


def test_embedded_slices_serve_arc_easy_and_piqa_offline(manager, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("LAYERPRUNE_DATA", raising=False)
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path / "cache"))
    run = run_tasks(tiny_lm(), tiny_tokenizer(), ["arc_easy"], HarnessOptions(limit=4, batch_size=4))
    assert run.data["arc_easy"]["source"] == "embedded" and run.data["arc_easy"]["counts"] == {"test": 200}
    assert run.tasks["arc_easy"]["samples"] == 4 and 0 <= run.tasks["arc_easy"]["acc"] <= 1
    specs, data = task_specs(["piqa"], None, manager)
    assert data["piqa"]["counts"] == {"validation": 200} and specs[0]["validation_split"] == "validation"


def test_vllm_backend_without_vllm_is_a_user_error(monkeypatch, capsys):
    monkeypatch.setattr(harness.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"vllm backend needs vLLM, which is not installed \(pip install vllm"):
        HarnessOptions(backend="vllm")
    with pytest.raises(ConfigError, match="backend"):
        HarnessOptions(backend="vlm")
    assert main(["eval", "--model", "no/such/model", "--tasks", "arc_easy", "--backend", "vllm"]) == 2
    assert "vllm backend needs vLLM" in capsys.readouterr().err  # before the model is looked up


def test_vllm_backend_hands_lm_eval_a_saved_copy(monkeypatch):
    """lm-eval gets ``model="vllm"`` and ``pretrained=DIR``, a directory holding the in-memory model's weights."""
    monkeypatch.setattr(harness.importlib.util, "find_spec", lambda name: object())
    seen = {}

    def simple_evaluate(**kwargs):
        directory = Path(kwargs["model_args"]["pretrained"])
        seen.update(kwargs, reloaded=AutoModelForCausalLM.from_pretrained(directory))
        return {"results": {"arc_easy": {"acc,none": 0.5}}, "n-samples": {"arc_easy": {"effective": 1}}}

    monkeypatch.setattr(lm_eval, "simple_evaluate", simple_evaluate)
    model, tokenizer = tiny_lm(), tiny_tokenizer()
    options = HarnessOptions(limit=1, batch_size=3, backend="vllm", tensor_parallel_size=2)
    run = run_tasks(model, tokenizer, ["arc_easy"], options, seed=7)
    assert seen["model"] == "vllm" and run.tasks["arc_easy"]["acc"] == 0.5
    arguments = seen["model_args"]
    assert arguments == {
        "pretrained": arguments["pretrained"], "dtype": "float32", "tensor_parallel_size": 2, "batch_size": 3, "seed": 7
    }  # fmt: skip
    assert not Path(arguments["pretrained"]).exists()  # the temporary copy is gone afterwards
    for name, tensor in model.state_dict().items():
        assert torch.equal(seen["reloaded"].state_dict()[name], tensor), name
