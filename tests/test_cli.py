"""The command line: ``info`` and ``prune`` on a tiny local model, and how user errors look."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from layerprune.cli import main
from layerprune.provenance import read_record
from tiny_families import tiny_family_model
from tiny_models import tiny_model_dir, tiny_tokenizer, token_batch


@pytest.fixture
def model_dir(tmp_path):
    tiny_model_dir(tmp_path / "dense", family="gemma2")
    return tmp_path / "dense"


def test_info_prints_layers_and_attention_types(model_dir, capsys):
    assert main(["info", "--model", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert "gemma2" in out and "layers:       4" in out
    assert "layer   1: full_attention" in out


def test_info_prints_the_inferred_entry_of_a_family_without_a_table_entry(tmp_path, capsys):
    tiny_family_model("persimmon").save_pretrained(tmp_path / "persimmon")
    tiny_tokenizer().save_pretrained(tmp_path / "persimmon")
    assert main(["info", "--model", str(tmp_path / "persimmon")]) == 0
    out = capsys.readouterr().out
    assert "inferred entry (no table entry for this family):" in out
    assert "  layers: model.layers\n" in out and "  final_norm: model.final_layernorm\n" in out
    assert "  lora_targets: ('dense', 'dense_4h_to_h', 'dense_h_to_4h', 'query_key_value')\n" in out
    assert "  inferred: True\n" in out


def test_table_families_print_no_inferred_entry(model_dir, capsys):
    assert main(["info", "--model", str(model_dir)]) == 0
    assert "inferred entry" not in capsys.readouterr().out


def test_prune_reverse_order_removes_last_layers_and_reports_sizes(model_dir, tmp_path, capsys):
    out_dir = tmp_path / "pruned"
    assert main(["prune", "--model", str(model_dir), "--num-layers", "2", "--output", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "removed layers [2, 3]" in out and "4 → 2" in out
    record = read_record(out_dir)
    assert record["removed_layers"] == [2, 3] and record["steps"][0]["method"] == "reverse-order"
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir)
    assert reloaded.config.layer_types == ["sliding_attention", "full_attention"]


def test_prune_random_is_seeded(model_dir, tmp_path):
    for name in ("a", "b"):
        args = ["prune", "--model", str(model_dir), "--num-layers", "2", "--metric", "random", "--seed", "3"]
        assert main([*args, "--output", str(tmp_path / name)]) == 0
    assert read_record(tmp_path / "a")["removed_layers"] == read_record(tmp_path / "b")["removed_layers"]


def test_prune_explicit_layers_keeps_logits_of_saved_model(model_dir, tmp_path):
    assert main(["prune", "--model", str(model_dir), "--layers", "0,2", "--output", str(tmp_path / "p")]) == 0
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    assert reloaded.config.num_hidden_layers == 2
    assert torch.isfinite(reloaded(token_batch()).logits).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "9"], "out of range"),
        (["--layers", "0,1,2,3"], "cannot remove all"),
        (["--layers", "1,1"], "more than once"),
        (["--layers", "x"], "cannot read layer list"),
        (["--num-layers", "2", "--metric", "reverse"], "Did you mean 'reverse-order'"),
    ],
)
def test_bad_prune_exits_2_with_one_line_and_leaves_no_output(model_dir, tmp_path, capsys, args, message):
    out_dir = tmp_path / "pruned"
    assert main(["prune", "--model", str(model_dir), *args, "--output", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out_dir.exists()
    assert not list(tmp_path.glob(".pruned*")), "no temporary directory is left behind"


def test_existing_output_is_kept_unless_overwrite(model_dir, tmp_path):
    out_dir = tmp_path / "pruned"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    assert main(["prune", "--model", str(model_dir), "--layers", "1", "--output", str(out_dir)]) == 2
    assert (out_dir / "keep.txt").read_text() == "mine"
    assert main(["prune", "--model", str(model_dir), "--layers", "1", "--output", str(out_dir), "--overwrite"]) == 0
    assert not (out_dir / "keep.txt").exists() and (out_dir / "config.json").is_file()


def test_crash_while_saving_leaves_no_output(model_dir, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    def crash(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["prune", "--model", str(model_dir), "--layers", "1", "--output", str(tmp_path / "pruned")])
    assert list(tmp_path.iterdir()) == [model_dir]


def test_offline_hub_id_is_a_one_line_user_error():
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": src}
    result = subprocess.run(
        [sys.executable, "-m", "layerprune", "info", "--model", "nobody/no-such-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Hub id but HF_HUB_OFFLINE=1 is set" in result.stderr and "Traceback" not in result.stderr
