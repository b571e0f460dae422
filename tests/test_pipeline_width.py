"""Width and sparsify as pipeline stages: the shipped depth-width recipe end to end, API equality, invalidation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from layerprune.config import ConfigError
from layerprune.models import load_model, num_layers
from layerprune.pipeline import prune, run, validate_recipe
from layerprune.pipeline.recipe import read_mapping, set_key, shipped_path
from layerprune.width import SparsifyConfig, sparsify, width_prune
from layerprune.width.heterogeneous import WIDTHS_KEY
from pipeline_support import tiny_recipe, tiny_workspace
from tiny_models import token_batch

TINY = {
    "select.num_layers": 1,
    "width.ratio": 0.3,  # 2 KV groups: log-increase gives layers 0.15 … 0.45, non-uniform widths
    "calibration.samples": 4,
    "calibration.seq_len": 16,
    "heal.method.train_layers": 1,
    "heal.data": {"source": "TEXT", "seq_len": 24, "validation_size": 4},
    "heal.train": {"max_steps": 4, "batch_size": 2, "eval_steps": 2, "learning_rate": 1e-3},
    "evaluate": {"ppl": ["TEXT"], "perplexity": {"seq_len": 32, "max_windows": 4}},
}


def shipped_on_tiny(root: Path, **overrides) -> dict:
    """The shipped depth-width recipe pointed at the tiny workspace (same sections, smaller numbers)."""
    data = read_mapping(shipped_path("recipes", "depth-width"))
    text = str(root / "text.txt")
    for key, value in {**TINY, "model.spec": str(root / "tiny"), "calibration.source": text, **overrides}.items():
        set_key(data, key, json.loads(json.dumps(value).replace('"TEXT"', json.dumps(text))))
    return data


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict]:
    root = tiny_workspace(tmp_path_factory.mktemp("width"))
    data = shipped_on_tiny(root)
    result = run(validate_recipe(data), root / "run")
    assert [p.name for p in result.plan] == ["dense", "score", "select", "width", "heal", "evaluate", "report"]
    return root, data


def statuses(result) -> dict[str, str]:
    return {planned.name: planned.status for planned in result.plan}


def test_width_stage_output_equals_calling_the_api(finished) -> None:
    root, data = finished
    recipe = validate_recipe(data)
    model, tokenizer = load_model(str(root / "tiny"))
    prune(model, tokenizer, recipe.select, recipe.calibration)
    direct = width_prune(model, tokenizer, recipe.width, recipe.calibration)
    staged = load_file(str(root / "run" / "stages" / "width" / "model" / "model.safetensors"))
    expected = model.state_dict()
    assert staged.keys() <= expected.keys() and len(staged) >= len(expected) - 1  # tied lm_head saved once
    for name, tensor in staged.items():
        assert torch.equal(tensor, expected[name]), name
    summary = json.loads((root / "run" / "results.json").read_text())["stages"]["width"]
    assert summary["ratios"] == direct.ratios and not summary["uniform"]
    assert summary["parameters"] == [direct.parameters_before, direct.parameters_after]


def test_healed_narrow_model_reloads_natively_and_with_remote_code(finished) -> None:
    root, _ = finished
    final = root / "run" / "model"
    native, _ = load_model(str(final))
    assert num_layers(native) == 3 and getattr(native.config, WIDTHS_KEY)
    remote = AutoModelForCausalLM.from_pretrained(final, trust_remote_code=True, attn_implementation="eager")
    ids = token_batch(2, 10, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(remote.eval()(ids).logits, native(ids).logits, atol=1e-5, rtol=0)
    results = json.loads((root / "run" / "results.json").read_text())
    assert results["final"]["num_layers"] == 3 and results["final"]["perplexity"]
    report = (root / "run" / "report" / "report.md").read_text()
    widths = results["stages"]["width"]["widths"]
    assert "## Width pruning" in report and f"| {widths[2]['intermediate_size']} |" in report


def test_changing_the_width_ratio_reruns_width_heal_evaluate_only(finished, capsys) -> None:
    root, data = finished
    out = root / "run"
    select_weights = out / "stages" / "select" / "model" / "model.safetensors"
    before = select_weights.stat().st_mtime_ns
    changed = json.loads(json.dumps(data))
    changed["width"]["ratio"] = 0.2
    capsys.readouterr()
    result = run(validate_recipe(changed), out)
    assert statuses(result) == {
        "dense": "cached", "score": "cached", "select": "cached",
        "width": "re-run", "heal": "re-run", "evaluate": "re-run", "report": "re-run",
    }  # fmt: skip
    assert "changed width.ratio: 0.3 → 0.2" in capsys.readouterr().out
    assert select_weights.stat().st_mtime_ns == before
    assert json.loads((out / "stages" / "width" / "stage.json").read_text())["section"]["width"]["ratio"] == 0.2


def test_sparsify_stage_equals_the_api_and_keeps_its_dsa_search_in_the_stage(tmp_path) -> None:
    root = tiny_workspace(tmp_path)
    settings = {"allocation": "dsa", "sparsity": 0.5, "dsa_generations": 1, "dsa_population": 2, "dsa_samples": 2}
    data = tiny_recipe(root, sparsify=settings, heal=None)
    recipe = validate_recipe(data)
    result = run(recipe, root / "run")
    assert [p.name for p in result.plan] == ["dense", "score", "select", "sparsify", "evaluate", "report"]
    stage = root / "run" / "stages" / "sparsify"
    assert (stage / "dsa-search.json").is_file() and (stage / "dsa-function.json").is_file()
    model, tokenizer = load_model(str(root / "tiny"))
    prune(model, tokenizer, recipe.select, recipe.calibration)
    config = SparsifyConfig(**settings, dsa_function=str(tmp_path / "f.json"), dsa_state=str(tmp_path / "s.json"))
    direct = sparsify(model, tokenizer, config, recipe.calibration)
    summary = json.loads((root / "run" / "results.json").read_text())["stages"]["sparsify"]
    assert summary["sparsities"] == direct.sparsities and summary["function"] == direct.function
    for name, tensor in load_file(str(stage / "model" / "model.safetensors")).items():
        assert torch.equal(tensor, model.state_dict()[name]), name


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"select": None}, "give select, width and/or sparsify"),
        ({"sparsify": {"sparsity": 0.5}}, "heal would fill in the zeros"),
        ({"width": {"ratio": 0.2}, "heal": {"schedule": "1:1:1"}}, "use a one-shot schedule with width"),
        ({"width": {"ratio": 0.2, "shedule": "uniform"}}, "did you mean width.schedule"),
        ({"width": {"ratio": 1.5}}, "width.ratio: Input should be less than 1"),
    ],
)
def test_bad_width_sections_are_rejected_before_any_model_loads(tmp_path, sections, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_recipe(tiny_recipe(tmp_path, **sections))
