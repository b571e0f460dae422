"""The one resolver for named data: explicit path → $LAYERPRUNE_DATA → embedded slices → Hub; bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import datasets
import pytest

import layerprune.data as data
from layerprune.calibration import read_documents
from layerprune.cli import main
from layerprune.data import ChecksumError, HubSpec, embedded_dir, locate
from layerprune.errors import UserError
from layerprune.evaluation.perplexity import load_text
from layerprune.healing.data import read_records

WIKI = "wikitext2/raw/wiki.test.raw"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in ("LAYERPRUNE_DATA", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_hub(monkeypatch):
    """``datasets.load_dataset`` replaced by a recorder that returns two rows."""
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"text": "hub row one"}, {"text": "hub row two"}]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_explicit_directory_beats_environment_beats_embedded(tmp_path, monkeypatch, fake_hub):
    explicit, configured = tmp_path / "explicit", tmp_path / "configured"
    write(explicit / WIKI, "explicit text\n")
    write(configured / WIKI, "configured text\n")
    monkeypatch.setenv("LAYERPRUNE_DATA", str(configured))
    assert load_text("wikitext2", explicit).text == "explicit text\n"
    assert load_text("wikitext2").text == "configured text\n"
    monkeypatch.setenv("LAYERPRUNE_DATA", str(tmp_path / "empty-but-there"))
    (tmp_path / "empty-but-there").mkdir()
    embedded = load_text("wikitext2")
    assert embedded.source.startswith("embedded") and embedded.text.startswith("\n\n = Robert Boulter = \n")
    assert fake_hub == []  # never the Hub while a local copy exists


def test_an_explicit_file_beats_every_name(tmp_path, fake_hub):
    path = write(tmp_path / "mine.txt", "my own text")
    assert load_text(str(path)).text == "my own text"
    assert read_documents(str(path)) == ["my own text"]
    assert fake_hub == []


def test_gzipped_files_in_a_data_folder_are_read(tmp_path, monkeypatch):
    target = tmp_path / "dolly15k" / "databricks-dolly-15k-v1-nocategory.jsonl.gz"
    target.parent.mkdir(parents=True)
    record = {"instruction": "Say hi", "context": "", "response": "hi"}
    with gzip.open(target, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    monkeypatch.setenv("LAYERPRUNE_DATA", str(tmp_path))
    assert read_records("dolly") == [record]


def test_hub_is_reached_only_when_nothing_local_exists(tmp_path, monkeypatch, fake_hub):
    monkeypatch.setenv("LAYERPRUNE_DATA", str(tmp_path))  # holds no alpaca
    records = read_records("alpaca")
    assert records == [{"text": "hub row one"}, {"text": "hub row two"}]
    assert fake_hub == [(("tatsu-lab/alpaca", None), {"split": "train", "data_files": None, "streaming": False})]
    write(tmp_path / "alpaca_subset" / "alpaca_5000.json", json.dumps([{"instruction": "i", "output": "o"}]))
    assert read_records("alpaca") == [{"instruction": "i", "output": "o"}]
    assert len(fake_hub) == 1  # the local copy, once there, is used instead


def test_hub_calls_for_calibration_and_perplexity(fake_hub):
    assert read_documents("wikitext2") == ["hub row one\n\nhub row two"]  # train split joined (SparseGPT)
    assert fake_hub[-1] == (
        ("Salesforce/wikitext", "wikitext-2-raw-v1"),
        {"split": "train", "data_files": None, "streaming": False},
    )
    assert load_text("c4").text == "hub row one hub row two"
    files = {"validation": "en/c4-validation.00000-of-00008.json.gz"}
    assert fake_hub[-1] == (("allenai/c4", None), {"split": "validation", "data_files": files, "streaming": True})


def test_hub_id_for_healing_data(fake_hub):
    assert read_records("someone/instructions")[0] == {"text": "hub row one"}
    assert fake_hub == [(("someone/instructions", None), {"split": "train", "data_files": None, "streaming": False})]


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UserError, match=r"unknown data source 'doly'; did you mean 'dolly'\?"):
        read_records("doly")


def test_missing_path_is_named(tmp_path):
    with pytest.raises(UserError, match=r"data file .*nothere\.jsonl does not exist"):
        read_records(str(tmp_path / "nothere.jsonl"))
    with pytest.raises(UserError, match=r"data directory .* does not exist"):
        load_text("wikitext2", tmp_path / "no-such-dir")


def test_hub_id_while_offline_names_the_variable_and_alternatives(monkeypatch, fake_hub):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match=r"'org/name' is a Hugging Face Hub id but HF_DATASETS_OFFLINE=1 .*dolly"):
        read_records("org/name")
    with pytest.raises(UserError, match=r"no local copy of alpaca \(train\): tried \$LAYERPRUNE_DATA \(not set\), "):
        read_records("alpaca")
    assert fake_hub == []


def test_nothing_found_lists_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAYERPRUNE_DATA", str(tmp_path))
    with pytest.raises(UserError) as error:
        load_text("c4", tmp_path)
    message = str(error.value)
    for place in ("--data-dir", "$LAYERPRUNE_DATA", "embedded", "HF_HUB_OFFLINE=1", "set LAYERPRUNE_DATA"):
        assert place in message
    assert "\n" not in message


def damaged_copy(tmp_path: Path, monkeypatch) -> Path:
    """A copy of the embedded folder whose WikiText-2 slice has one byte changed."""
    copy = tmp_path / "embedded"
    shutil.copytree(embedded_dir(), copy)
    path = copy / f"{WIKI}.gz"
    raw = bytearray(path.read_bytes())
    raw[-9] ^= 1  # inside the gzip trailer's CRC
    path.write_bytes(bytes(raw))
    monkeypatch.setattr(data, "embedded_dir", lambda: copy)
    return copy


def test_embedded_checksum_mismatch_is_a_user_error(tmp_path, monkeypatch):
    damaged_copy(tmp_path, monkeypatch)
    with pytest.raises(ChecksumError, match=r"embedded data file .*wiki\.test\.raw\.gz is damaged"):
        load_text("wikitext2")


def test_every_manifest_entry_matches_its_file():
    for relative in json.loads((embedded_dir() / "MANIFEST.json").read_text())["files"]:
        data.embedded_root().file(relative.removesuffix(".gz"))  # raises on a mismatch


def test_embedded_slices_carry_their_provenance():
    for folder in ("wikitext2", "dolly15k", "arc", "piqa"):
        assert "icense" in (embedded_dir() / folder / "PROVENANCE.md").read_text()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "heal.data.source=doly"], "did you mean 'dolly'"),
        (["--set", "heal.data.source=/no/such/file.jsonl"], "does not exist"),
        (["--set", "heal.data.source=org/name"], "HF_HUB_OFFLINE=1"),
        (["--set", "evaluate.ppl=[wikitext3]"], "did you mean 'wikitext2'"),
        (["--set", "calibration.source=wikitext"], "did you mean 'wikitext2'"),
    ],
)
def test_bad_data_in_a_recipe_fails_before_anything_is_written(arguments, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output = tmp_path / "run"
    assert main(["run", "quickstart", "--output", str(output), *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not output.exists()


def test_damaged_embedded_slice_fails_a_dry_run(tmp_path, monkeypatch, capsys):
    damaged_copy(tmp_path, monkeypatch)
    assert main(["run", "quickstart", "--output", str(tmp_path / "run"), "--dry-run"]) == 2
    assert "is damaged" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_model_hub_id_offline_says_so(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--model", "org/name", "--ppl", "wikitext2"]) == 2
    assert "HF_HUB_OFFLINE=1 is set" in capsys.readouterr().err


def test_data_command_lists_sources_and_where_they_resolve(tmp_path, monkeypatch, capsys):
    write(tmp_path / WIKI, "x" * 1000)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["data", "--data-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "wikitext2" in text and "--data-dir" in text and "dolly" in text and "embedded" in text
    listing = {(name, role): (where, size) for name, role, where, size in data.describe_sources(tmp_path)}
    assert listing["wikitext2", "test"] == (f"--data-dir ({tmp_path})", 1000)
    assert listing["dolly", "train"][0].startswith("embedded") and listing["dolly", "train"][1] > 4_000_000
    assert listing["alpaca", "train"][0].startswith("nowhere: no local copy of alpaca")
    assert listing["default", "train"][0] == "built into Python (pydoc_data.topics)"


def test_locate_returns_hub_spec_when_online():
    assert locate("ptb", "test").hub == HubSpec("ptb_text_only", "penn_treebank", "test")
