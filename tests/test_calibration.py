"""Calibration data: sources, window sampling, reproducibility and errors."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from tokenizers import processors

from layerprune.calibration import CalibrationConfig, load_calibration, read_documents
from layerprune.cli.common import add_calibration_arguments, calibration_from_arguments
from layerprune.errors import UserError
from tiny_models import tiny_tokenizer

TEXT = " ".join(f"sentence {i} says {i * 7 % 13} things." for i in range(40))


def test_default_source_is_python_reference_text():
    documents = read_documents("default")
    assert len(documents) > 50
    assert sum(map(len, documents)) > 300_000
    assert any("conditional execution" in doc for doc in documents)


def test_windows_are_slices_of_the_text_and_reproducible(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text(TEXT)
    tokenizer = tiny_tokenizer()
    config = CalibrationConfig(source=str(path), samples=6, seq_len=32, seed=3)
    first, second = load_calibration(tokenizer, config), load_calibration(tokenizer, config)
    assert first.input_ids.shape == (6, 32) and first.input_ids.dtype == torch.long
    assert torch.equal(first.input_ids, second.input_ids)
    assert torch.equal(first.attention_mask, torch.ones(6, 32, dtype=torch.long))
    for row in first.input_ids:
        assert tokenizer.decode(row) in TEXT
    other = load_calibration(tokenizer, CalibrationConfig(source=str(path), samples=6, seq_len=32, seed=4))
    assert not torch.equal(first.input_ids, other.input_ids)


def test_windows_come_only_from_long_enough_documents(tmp_path):
    path = tmp_path / "docs.jsonl"
    records = [{"text": "short"}, {"text": "x" * 100}, {"instruction": "say", "input": "", "output": "hi"}]
    path.write_text("\n".join(json.dumps(r) for r in records))
    calibration = load_calibration(tiny_tokenizer(), CalibrationConfig(str(path), samples=6, seq_len=16))
    assert set(calibration.input_ids.flatten().tolist()) == {tiny_tokenizer().convert_tokens_to_ids("x")}


def test_instruction_records_are_flattened(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([{"instruction": "Add.", "input": "1 and 2", "output": "3" * 20}]))
    assert read_documents(str(path)) == ["Add.\n\n1 and 2\n\n" + "3" * 20]
    dolly = tmp_path / "dolly.jsonl"
    dolly.write_text(json.dumps({"instruction": "Q", "context": "C", "response": "R"}))
    assert read_documents(str(dolly)) == ["Q\n\nC\n\nR"]


def test_parquet_records(tmp_path):
    import pyarrow
    import pyarrow.parquet

    path = tmp_path / "docs.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"text": ["alpha", "beta"]}), path)
    assert read_documents(str(path)) == ["alpha", "beta"]


def test_too_short_text_says_how_many_tokens(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("only twenty-six tokens....")
    with pytest.raises(UserError, match=r"longest document has 26 tokens"):
        load_calibration(tiny_tokenizer(), CalibrationConfig(str(path), seq_len=64))


def test_bos_prefix_when_tokenizer_adds_it(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text(TEXT)
    tokenizer = tiny_tokenizer()
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )
    calibration = load_calibration(tokenizer, CalibrationConfig(str(path), samples=3, seq_len=10))
    assert calibration.input_ids.shape == (3, 10)
    assert calibration.input_ids[:, 0].tolist() == [1, 1, 1]
    assert 1 not in calibration.input_ids[:, 1:].tolist()


def test_batches_cover_all_samples(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text(TEXT)
    calibration = load_calibration(tiny_tokenizer(), CalibrationConfig(str(path), samples=5, seq_len=8))
    sizes = [ids.shape[0] for ids, mask in calibration.batches(2)]
    assert sizes == [2, 2, 1]
    assert torch.equal(torch.cat([ids for ids, _ in calibration.batches(2)]), calibration.input_ids)


def test_bad_sources_and_settings_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"unknown data source 'wikitext'; did you mean 'wikitext2'"):
        read_documents("wikitext")
    with pytest.raises(UserError, match="does not exist"):
        read_documents(str(tmp_path / "missing.jsonl"))
    with pytest.raises(UserError, match="samples"):
        CalibrationConfig(samples=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}')
    with pytest.raises(UserError, match="no 'text' or 'instruction' field"):
        read_documents(str(bad))


def test_unreachable_hub_is_a_user_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Salesforce/wikitext' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.delenv("LAYERPRUNE_DATA", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with pytest.raises(UserError, match=r"cannot load calibration source 'wikitext2' from .* \(Salesforce/wikitext"):
        read_documents("wikitext2")


def test_cli_arguments_build_the_calibration_set(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text(TEXT)
    parser = argparse.ArgumentParser()
    add_calibration_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.calibration, defaults.samples, defaults.seq_len, defaults.seed) == ("default", 10, 128, 0)
    args = parser.parse_args(["--calibration", str(path), "--samples", "3", "--seq-len", "12", "--seed", "5"])
    calibration = calibration_from_arguments(args, tiny_tokenizer())
    assert calibration.input_ids.shape == (3, 12)
    assert calibration.config == CalibrationConfig(str(path), 3, 12, 5)


def test_text_shorter_than_the_requested_windows_names_both_numbers(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("x" * 100)  # 100 tokens
    load_calibration(tiny_tokenizer(), CalibrationConfig(str(path), samples=6, seq_len=16))  # 96 tokens: enough
    with pytest.raises(UserError, match=r"too short for 7 windows of 16 tokens \(112 tokens\): .* hold 100"):
        load_calibration(tiny_tokenizer(), CalibrationConfig(str(path), samples=7, seq_len=16))
