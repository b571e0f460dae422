"""The healing trainer end to end on a tiny model: resume, cached prefix, LoRA output, distillation, budgets."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from layerprune.errors import UserError
from layerprune.execution import bypassed, capture_layer_inputs
from layerprune.healing import DataConfig, HealConfig, LossConfig, MethodConfig, TrainConfig, heal
from layerprune.healing.data import Example, load_healing_data
from layerprune.healing.prefix_cache import build_prefix_cache
from layerprune.models import load_model
from layerprune.provenance import get_provenance, read_record
from layerprune.surgery import remove_layers
from tiny_models import tiny_model, tiny_tokenizer, token_batch

TOKENIZER = tiny_tokenizer(bos=True)


class Killed(Exception):
    pass


class KillAfterSave(TrainerCallback):
    """Simulates a crash right after the checkpoint of ``step`` is written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("\n".join(f"sample {i} says {i * 7 % 13} and more words" for i in range(24)))
    return path


def config(tmp_path, text_file, name: str, method: MethodConfig | None = None, loss: str = "ce", **train) -> HealConfig:
    settings = {"max_steps": 4, "batch_size": 2, "eval_steps": 2, "logging_steps": 1, "learning_rate": 1e-2, **train}
    return HealConfig(
        output=str(tmp_path / name),
        method=method or MethodConfig(train_layers=1, untie=True),
        loss=LossConfig(name=loss),
        data=DataConfig(source=str(text_file), seq_len=24, validation_size=4),
        train=TrainConfig(**settings),
    )


def weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_same_weights(first, second, atol: float = 0.0) -> None:
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


def test_heal_writes_model_record_and_loss_curve(tmp_path, text_file) -> None:
    result = heal(tiny_model("llama"), TOKENIZER, config(tmp_path, text_file, "out"))
    out = tmp_path / "out"
    step = read_record(out)["steps"][-1]
    assert step["stage"] == "heal" and step["steps"] == 4
    assert step["settings"]["method"]["train_layers"] == 1 and step["settings"]["loss"]["name"] == "ce"
    assert step["best_validation_loss"] == min(
        e["loss"] for e in json.loads((out / "loss_curve.json").read_text())["validation"]
    )
    curve = json.loads((out / "loss_curve.json").read_text())
    assert [e["step"] for e in curve["train"]] == [1, 2, 3, 4]
    assert [e["step"] for e in curve["validation"]] == [2, 4]
    assert not (tmp_path / "out.checkpoints").exists()
    reloaded, _ = load_model(str(out))
    ids = token_batch()
    torch.testing.assert_close(reloaded(input_ids=ids).logits, result.model(input_ids=ids).logits)


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, text_file) -> None:
    straight = heal(tiny_model("llama"), TOKENIZER, config(tmp_path, text_file, "straight", eval_steps=1))
    killed = config(tmp_path, text_file, "resumed", eval_steps=1)
    with pytest.raises(Killed):
        heal(tiny_model("llama"), TOKENIZER, killed, callbacks=[KillAfterSave(2)])
    with pytest.raises(UserError, match="--resume"):
        heal(tiny_model("llama"), TOKENIZER, killed)
    killed.train.resume = True
    resumed = heal(tiny_model("llama"), TOKENIZER, killed)
    assert_same_weights(resumed.model, straight.model)
    assert resumed.summary["steps"] == 4


def test_cached_prefix_training_equals_uncached(tmp_path, text_file) -> None:
    cached = heal(tiny_model("llama"), TOKENIZER, config(tmp_path, text_file, "cached"))
    spilled = heal(tiny_model("llama"), TOKENIZER, config(tmp_path, text_file, "spilled", cache_memory_gb=0.0))
    plain = heal(tiny_model("llama"), TOKENIZER, config(tmp_path, text_file, "plain", cache_prefix=False))
    assert cached.summary["cached_prefix_layers"] == 3 and plain.summary["cached_prefix_layers"] == 0
    assert cached.summary["cache_bytes"] > 0
    assert_same_weights(cached.model, plain.model, atol=1e-5)
    assert_same_weights(spilled.model, plain.model, atol=1e-5)
    assert cached.summary["best_validation_loss"] == pytest.approx(plain.summary["best_validation_loss"], rel=1e-5)
    assert not torch.equal(plain.model.lm_head.weight, tiny_model("llama").lm_head.weight)


def test_prefix_cache_holds_each_samples_layer_input(tmp_path) -> None:
    model = tiny_model("llama")
    examples = [Example([1, 5, 6, 7, 8], [0] * 5), Example([1, 9, 10], [0] * 3), Example([1, 4], [0] * 2)]
    cache = build_prefix_cache(
        model, examples, 2, batch_size=2, pad_token_id=0, memory_budget=1 << 20, spill_dir=tmp_path
    )
    for index, example in enumerate(examples):
        expected = capture_layer_inputs(model, torch.tensor([example.input_ids]))[2][0]
        torch.testing.assert_close(cache.batch(torch.tensor([index]), 6)[0, : len(example.input_ids)], expected)
    assert cache.batch(torch.tensor([2]), 6)[0, 2:].abs().sum() == 0
    with bypassed(model, []):
        assert cache.nbytes == 10 * 32 * 4


def test_lora_heal_merges_and_keeps_the_adapter(tmp_path, text_file) -> None:
    run = config(tmp_path, text_file, "lora", method=MethodConfig(name="lora"))
    result = heal(tiny_model("llama"), TOKENIZER, run)
    out = tmp_path / "lora"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert result.summary["cached_prefix_layers"] == 0
    reloaded, _ = load_model(str(out))
    assert not any("lora" in name for name in reloaded.state_dict())
    ids = token_batch()
    torch.testing.assert_close(reloaded(input_ids=ids).logits, result.model(input_ids=ids).logits)
    assert not torch.allclose(reloaded(input_ids=ids).logits, tiny_model("llama")(input_ids=ids).logits, atol=1e-4)


def test_distillation_from_the_dense_model(tmp_path, text_file) -> None:
    teacher = tiny_model("llama")
    student = remove_layers(tiny_model("llama"), [1])
    run = config(tmp_path, text_file, "kd", loss="ce+kd")
    result = heal(student, TOKENIZER, run, teacher=teacher)
    assert result.summary["teacher_seconds"] > 0
    assert result.summary["teacher_bytes"] == sum(p.numel() * 4 for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert result.summary["teacher"] == "tiny-llama"
    orphan = remove_layers(tiny_model("llama"), [1])
    get_provenance(orphan).source = str(tmp_path / "empty")  # the dense model is gone
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot load the teacher"):
        heal(orphan, TOKENIZER, config(tmp_path, text_file, "kd2", loss="kd"))


def test_hidden_state_distillation_from_a_copy_of_itself_is_exactly_zero(tmp_path, text_file) -> None:
    """mse on the last hidden states: identical student and teacher give loss 0, so AdamW moves nothing."""
    student, teacher = tiny_model("llama"), tiny_model("llama")
    result = heal(
        student, TOKENIZER, config(tmp_path, text_file, "mse", loss="mse", cache_prefix=False), teacher=teacher
    )
    curve = json.loads((tmp_path / "mse" / "loss_curve.json").read_text())["train"]
    assert [e["loss"] for e in curve] == [0.0] * 4
    assert_same_weights(result.model, teacher)
    pruned = remove_layers(tiny_model("llama"), [1])
    heal(pruned, TOKENIZER, config(tmp_path, text_file, "mse2", loss="mse"), teacher=teacher)
    assert json.loads((tmp_path / "mse2" / "loss_curve.json").read_text())["train"][0]["loss"] > 1e-3


def test_kd_hidden_heals_through_the_layer_map_without_a_prefix_cache(tmp_path, text_file) -> None:
    """kd+hidden reads every layer's state, so the frozen prefix is run, not replayed; its hidden term adds to kd."""
    teacher = tiny_model("llama")
    runs = {
        loss: heal(remove_layers(tiny_model("llama"), [1]), TOKENIZER, config(tmp_path, text_file, loss, loss=loss),
                   teacher=teacher)
        for loss in ("kd", "kd+hidden")
    }  # fmt: skip
    assert runs["kd"].summary["cached_prefix_layers"] > 0 and runs["kd+hidden"].summary["cached_prefix_layers"] == 0
    first = {loss: json.loads((tmp_path / loss / "loss_curve.json").read_text())["train"][0]["loss"] for loss in runs}
    assert first["kd+hidden"] > first["kd"] + 1e-3


def test_token_budget_sets_the_steps(tmp_path, text_file) -> None:
    run = config(tmp_path, text_file, "budget", max_steps=None, max_tokens=200, eval_steps=10)
    run.data.packing, run.data.validation_size = True, 0
    result = heal(tiny_model("llama"), TOKENIZER, run)
    data = load_healing_data(TOKENIZER, run.data)
    assert {len(e.input_ids) for e in data.train.examples} == {24}
    assert result.summary["steps"] == 5  # ⌈200 / (2 × 24)⌉
    assert result.summary["tokens_seen"] == 5 * 2 * 24
    assert result.summary["train_examples"] == 5 * 2 < len(data.train)  # only what the budget reaches is used


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs a CUDA GPU (bitsandbytes NF4)")
def test_qlora_heal_merges_into_the_full_precision_weights(tmp_path, text_file) -> None:
    pytest.importorskip("bitsandbytes")
    run = config(tmp_path, text_file, "qlora", method=MethodConfig(name="qlora"), bf16=True)
    base = tiny_model("llama")
    result = heal(tiny_model("llama"), TOKENIZER, run)
    assert (tmp_path / "qlora" / "adapter" / "adapter_model.safetensors").is_file()
    reloaded, _ = load_model(str(tmp_path / "qlora"))
    assert not any("lora" in name or "absmax" in name for name in reloaded.state_dict())
    assert {p.dtype for p in reloaded.parameters()} == {torch.float32}
    ids = token_batch()
    healed_logits = reloaded(input_ids=ids).logits
    torch.testing.assert_close(healed_logits, result.model.cpu()(input_ids=ids).logits)
    assert not torch.allclose(healed_logits, base(input_ids=ids).logits, atol=1e-4)
