"""Iterative 1:k:n schedules: both steps' artifacts, and resumption after an interruption."""

from __future__ import annotations

import json

import pytest
import torch

from layerprune.errors import UserError
from layerprune.healing import DataConfig, HealConfig, MethodConfig, TrainConfig
from layerprune.healing import iterate as iterate_module
from layerprune.healing.iterate import IterateConfig, iterate, parse_schedule
from layerprune.models import num_layers
from layerprune.provenance import get_provenance, read_record
from tiny_models import tiny_model, tiny_tokenizer

TOKENIZER = tiny_tokenizer(bos=True)


def test_parse_schedule() -> None:
    assert parse_schedule("1:4:8") == [4, 4]
    assert parse_schedule("1:4:10") == [4, 4, 2]
    assert parse_schedule("1:3:3") == [3]
    for bad in ("2:1:2", "1:3:2", "1:x:2", "1:2"):
        with pytest.raises(UserError, match="schedule"):
            parse_schedule(bad)


def make_config(tmp_path, text_file, name: str) -> IterateConfig:
    heal = HealConfig(
        output="",
        method=MethodConfig(train_layers=1),
        data=DataConfig(source=str(text_file), seq_len=24, validation_size=4),
        train=TrainConfig(max_steps=2, batch_size=2, eval_steps=1, learning_rate=1e-2),
    )
    return IterateConfig(output=str(tmp_path / name), schedule="1:1:2", heal=heal)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("\n".join(f"line {i} tells {i * 5 % 11} things" for i in range(16)))
    return path


def test_one_one_two_makes_both_steps_and_resumes(tmp_path, text_file, monkeypatch) -> None:
    straight, records = iterate(tiny_model("llama"), TOKENIZER, make_config(tmp_path, text_file, "straight"))
    run = tmp_path / "straight"
    assert num_layers(straight) == 2
    assert get_provenance(straight).removed_layers == [2, 3]  # reverse-order, re-scored after the first cut
    assert [r["removed_source_layers"] for r in records] == [[3], [2]]
    for step in (1, 2):
        assert json.loads((run / f"step_{step}" / "scores.json").read_text())["metric"] == "reverse-order"
        assert read_record(run / f"step_{step}" / "model")["steps"][-1]["stage"] == "heal"
    assert len(json.loads((run / "schedule.json").read_text())["steps"]) == 2

    calls = []
    real_heal = iterate_module.heal

    def heal_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_heal(*args, **kwargs)

    monkeypatch.setattr(iterate_module, "heal", heal_then_die)
    config = make_config(tmp_path, text_file, "resumed")
    with pytest.raises(KeyboardInterrupt):
        iterate(tiny_model("llama"), TOKENIZER, config)
    assert (tmp_path / "resumed" / "step_1" / "model").is_dir()
    assert not (tmp_path / "resumed" / "step_2" / "model").exists()
    calls.clear()
    monkeypatch.setattr(iterate_module, "heal", real_heal)
    resumed, resumed_records = iterate(tiny_model("llama"), TOKENIZER, config)
    assert resumed_records[0]["heal"]["steps"] == records[0]["heal"]["steps"]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
