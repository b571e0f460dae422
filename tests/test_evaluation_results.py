"""Suites and their averages, the results schema, the table, compare, and the eval/compare CLI."""

from __future__ import annotations

import json

import pytest

from evaluation_support import data_dir, tiny_lm, tiny_tokenizer
from layerprune.cli import main
from layerprune.errors import UserError
from layerprune.evaluation import SUITES, EvalConfig, PerplexityOptions, SpeedOptions, evaluate
from layerprune.evaluation.results import SCHEMA, compare_table, read_results, results_table, write_results
from layerprune.evaluation.tasks import expand_tasks
from layerprune.surgery import remove_layers


def test_zeroshot7_average_uses_acc_norm_where_the_paper_does():
    results = {t: {"acc": 0.5, "acc_norm": 0.9} for t in SUITES.get("zeroshot7").tasks}
    average = SUITES.get("zeroshot7").average(results)
    assert average.value == pytest.approx((4 * 0.5 + 3 * 0.9) / 7)
    assert average.tasks["hellaswag"] == "acc_norm" and average.tasks["boolq"] == "acc"
    assert average.missing == []


def test_paper8_average_is_the_mean_acc_and_lists_missing_tasks():
    results = {"mmlu": {"acc": 0.3}, "piqa": {"acc": 0.7}}
    average = SUITES.get("paper8").average(results)
    assert average.value == pytest.approx(0.5)
    assert "cmmlu" in average.missing and len(average.missing) == 6


def test_expand_tasks_keeps_order_and_drops_duplicates():
    tasks, suites = expand_tasks(["piqa", "zeroshot7"])
    assert tasks[0] == "piqa" and tasks.count("piqa") == 1 and len(tasks) == 7
    assert suites == ["zeroshot7"]


def evaluated(tmp_path, model=None):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    config = EvalConfig(
        ppl=[str(text)],
        perplexity=PerplexityOptions(seq_len=32, max_windows=2),
        speed=SpeedOptions(prompt_len=8, decode_tokens=2, repeats=1),
    )
    return evaluate(model or tiny_lm(), tiny_tokenizer(), config, source_loader=lambda *_: tiny_lm())


def test_results_schema_roundtrip_and_compare(tmp_path):
    dense = evaluated(tmp_path)
    pruned = evaluated(tmp_path, remove_layers(tiny_lm(), [3]))
    assert dense["schema"] == SCHEMA and pruned["removed_layers"] == [3] and pruned["num_layers"] == 3
    assert set(dense) >= {"model", "source", "tasks", "suites", "perplexity", "speed", "settings", "versions", "seed"}
    assert "ratios" in pruned["speed"] and "ratios" not in dense["speed"]
    assert set(dense["wall_time_s"]) == {f"ppl:{tmp_path / 'text.txt'}", "speed"}
    write_results(tmp_path / "dense.json", dense)
    assert read_results(tmp_path / "dense.json") == json.loads(json.dumps(dense))
    assert results_table(dense).row_count > 3
    table = compare_table([dense, pruned], ["dense", "pruned"])
    assert [c.header for c in table.columns] == ["metric", "dense", "pruned", "Δ"]


def test_read_results_rejects_other_files(tmp_path):
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(UserError, match="not a layerprune results file"):
        read_results(tmp_path / "other.json")
    with pytest.raises(UserError, match="not found"):
        read_results(tmp_path / "missing.json")


def test_cli_compare_and_eval_errors(tmp_path, capsys):
    write_results(tmp_path / "a.json", evaluated(tmp_path))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 0
    assert "Δ" in capsys.readouterr().out
    assert main(["eval", "--model", "default"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nope.json")]) == 2


@pytest.mark.slow
@pytest.mark.shared_data
def test_cli_eval_on_the_embedded_model(tmp_path):
    out = tmp_path / "results.json"
    code = main(
        [
            "eval",
            "--model",
            "default",
            "--tasks",
            "arc_easy,winogrande",
            "--limit",
            "3",
            "--harness-batch-size",
            "4",
            "--data-dir",
            str(data_dir()),
            "--ppl",
            "wikitext2",
            "--ppl-seq-len",
            "128",
            "--ppl-windows",
            "2",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    results = read_results(out)
    assert results["tasks"]["arc_easy"]["samples"] == 3 and results["tasks"]["winogrande"]["acc_norm"] is None
    assert results["settings"]["harness"]["limit"] == 3
    assert 5 < results["perplexity"]["wikitext2"]["ppl"] < 200
    assert results["data"]["winogrande"]["counts"] == {"validation": 1267}
