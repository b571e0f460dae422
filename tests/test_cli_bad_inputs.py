"""The whole CLI against bad inputs: exit 2, one line on stderr, no traceback, nothing written.

Each case builds its inputs in a fresh work directory, runs ``layerprune.cli.main`` in
process on a tiny model, and compares the work directory before and after: no output, no
``.NAME.tmp-*`` folder, no ``*.checkpoints`` folder, no cache. ``VALIDATION_CASES`` are the
value-range and early-output checks of the validation layer (the settings classes of the
recipe schema, which the subcommands share).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest

from layerprune.cli import main
from layerprune.models.loading import default_gguf_path
from tiny_models import tiny_model_dir

GOOD_RECORDS = [{"instruction": f"say {i}", "output": f"hello number {i}, again and again"} for i in range(12)]


def _jsonl(path: Path, rows: list) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _setup(work: Path, model: Path) -> None:
    """Every input a case may name, under ``work`` (cheap to build)."""
    _jsonl(work / "good.jsonl", GOOD_RECORDS)
    (work / "bad.jsonl").write_text(json.dumps(GOOD_RECORDS[0]) + '\n{"instruction": "x", \n')
    _jsonl(work / "missing.jsonl", [GOOD_RECORDS[0], {"instruction": "no answer"}])
    _jsonl(work / "list.jsonl", [[1, 2]])
    (work / "dict.json").write_text(json.dumps({"rows": GOOD_RECORDS}))
    (work / "table.csv").write_text("instruction,output\nx,y\n")
    _jsonl(work / "notext.jsonl", [{"title": "no text here"}])
    binary = bytes(range(128, 256)) * 16
    for name in ("binary.txt", "binary.jsonl", "binary.json"):
        (work / name).write_bytes(binary)
    (work / "afile").write_text("a file, not a directory")
    (work / "existing").mkdir()
    (work / "existing" / "keep.txt").write_text("mine")
    (work / "notgguf.gguf").write_text("plain text")
    gguf = default_gguf_path().read_bytes()
    (work / "header.gguf").write_bytes(gguf[:5000])
    (work / "truncated.gguf").write_bytes(gguf[:3_000_000])
    (work / "noweights").mkdir()
    shutil.copy(model / "config.json", work / "noweights")
    shutil.copytree(model, work / "corrupt")
    (work / "corrupt" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    (work / "remote").mkdir()
    auto_map = {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (work / "remote" / "config.json").write_text(json.dumps({"model_type": "xmodel", "auto_map": auto_map}))
    shutil.copytree(model, work / "model")
    shutil.copytree(model, work / "badindex")
    (work / "badindex" / "model.safetensors.index.json").write_text('{"weight_map": ')
    (work / "state.json").write_text(json.dumps({"generation": 1}))
    results = {"schema": "layerprune.eval/1", "model": "m", "num_layers": 3, "source_num_layers": 4}
    results |= {"tasks": {}, "suites": {}, "perplexity": {"wikitext2": {"ppl": 12.5}}, "speed": None}
    (work / "results.json").write_text(json.dumps(results))
    (work / "ppl-string.json").write_text(json.dumps({**results, "perplexity": "12.5"}))
    (work / "ppl-value-string.json").write_text(json.dumps({**results, "perplexity": {"w": {"ppl": "12.5"}}}))
    (work / "schema-only.json").write_text(json.dumps({"schema": "layerprune.eval/1"}))
    readonly = work / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)


PRUNE = ["prune", "--model", "{m}", "--layers", "1", "--output", "{w}/out"]
SCORE = ["score", "--model", "{m}", "--metrics", "bi", "--samples", "2", "--seq-len", "16"]
HEAL = ["heal", "--model", "{m}", "--data", "{w}/good.jsonl", "--max-steps", "1", "--output", "{w}/out"]
MERGE = ["merge", "--model", "{m}", "--samples", "2", "--seq-len", "16", "--output", "{w}/out"]
WIDTH = ["width", "--model", "{m}", "--ratio", "0.3", "--samples", "2", "--seq-len", "16", "--output", "{w}/out"]
SPARSIFY = [
    "sparsify",
    "--model",
    "{m}",
    "--sparsity",
    "0.5",
    "--samples",
    "2",
    "--seq-len",
    "16",
    "--output",
    "{w}/out",
]
# An output that is the input model, lies inside it or contains it: refused whatever the flags (--overwrite given).
OUTPUT_ON_INPUT = [
    ("is-input", "{w}/model", "output {w}/model is the input {w}/model"),
    ("inside-input", "{w}/model/sub", "is inside the input"),
    ("contains-input", "{w}", "contains the input"),
]


def _with(base: list[str], *changes: str | None) -> list[str]:
    """``base`` with ``flag, value`` pairs set: a value replaces or appends the flag's, ``None`` removes it."""
    argv = list(base)
    for flag, value in zip(changes[::2], changes[1::2], strict=True):
        if flag in argv:
            index = argv.index(flag)
            del argv[index : index + 2]
        if value is not None:
            argv += [flag, value]
    return argv


CASES = [
    # model files
    ("gguf-not-gguf", _with(PRUNE, "--model", "{w}/notgguf.gguf"), "not a GGUF file"),
    ("gguf-truncated-header", _with(PRUNE, "--model", "{w}/header.gguf"), "truncated or corrupt"),
    ("gguf-truncated-data", _with(PRUNE, "--model", "{w}/truncated.gguf"), "truncated or corrupt"),
    ("gguf-missing", _with(PRUNE, "--model", "{w}/nothing.gguf"), "not found"),
    ("model-config-no-weights", _with(PRUNE, "--model", "{w}/noweights"), "no weights"),
    ("model-corrupt-safetensors", _with(PRUNE, "--model", "{w}/corrupt"), "cannot load the model"),
    ("model-missing-dir", _with(PRUNE, "--model", "{w}/nothing"), "not found"),
    ("model-missing-csv", _with(PRUNE, "--model", "{w}/table2.csv"), "not found"),
    ("model-offline-hub-id", _with(PRUNE, "--model", "nobody/no-such-model"), "Hub id but HF_HUB_OFFLINE=1 is set"),
    ("model-remote-code", _with(PRUNE, "--model", "{w}/remote"), "--trust-remote-code"),
    ("model-bad-dtype", _with(PRUNE, "--dtype", "float8"), "unknown dtype"),
    # calibration text
    ("calib-binary-txt", _with(SCORE, "--calibration", "{w}/binary.txt"), "not UTF-8"),
    ("calib-binary-jsonl", _with(SCORE, "--calibration", "{w}/binary.jsonl"), "not UTF-8"),
    ("calib-malformed-jsonl", _with(SCORE, "--calibration", "{w}/bad.jsonl"), "bad.jsonl:2: not valid JSON"),
    ("calib-no-text-field", _with(SCORE, "--calibration", "{w}/notext.jsonl"), "no 'text' or 'instruction'"),
    ("calib-missing-file", _with(SCORE, "--calibration", "{w}/nothing.txt"), "does not exist"),
    ("calib-missing-csv", _with(SCORE, "--calibration", "{w}/nothing.csv"), "does not exist"),
    ("calib-too-short", _with(SCORE, "--calibration", "{w}/good.jsonl", "--seq-len", "5000"), "too short"),
    # score output
    ("score-out-existing-dir", _with(SCORE, "--output", "{w}/existing"), "is a directory"),
    ("score-out-under-file", _with(SCORE, "--output", "{w}/afile/scores.json"), "is a file"),
    ("score-out-readonly", _with(SCORE, "--output", "{w}/readonly/scores.json"), "no write permission"),
    (
        "prune-scores-binary",
        _with(PRUNE, "--layers", None, "--num-layers", "1", "--scores", "{w}/binary.json"),
        "UTF-8",
    ),
    # model outputs
    ("prune-output-under-file", _with(PRUNE, "--output", "{w}/afile/out"), "is a file"),
    ("prune-output-readonly", _with(PRUNE, "--output", "{w}/readonly/out"), "no write permission"),
    ("prune-output-exists", _with(PRUNE, "--output", "{w}/existing"), "already exists"),
    ("prune-output-is-file", [*_with(PRUNE, "--output", "{w}/afile"), "--overwrite"], "is a file"),
    ("merge-output-under-file", _with(MERGE, "--num-layers", "1", "--output", "{w}/afile/out"), "is a file"),
    ("prune-ratio-above-1", _with(PRUNE, "--layers", None, "--ratio", "1.5"), "between 0 and 1"),
    ("merge-ratio-too-large", _with(MERGE, "--ratio", "0.9"), "need 1"),
    # healing data
    ("heal-malformed-jsonl", _with(HEAL, "--data", "{w}/bad.jsonl"), "bad.jsonl:2: not valid JSON"),
    ("heal-record-missing-field", _with(HEAL, "--data", "{w}/missing.jsonl"), "record 2: no 'output' field"),
    ("heal-binary-data", _with(HEAL, "--data", "{w}/binary.jsonl"), "not UTF-8"),
    ("heal-jsonl-not-objects", _with(HEAL, "--data", "{w}/list.jsonl"), "record 1 is a JSON list"),
    ("heal-json-without-data", _with(HEAL, "--data", "{w}/dict.json"), "no 'data' field"),
    ("heal-missing-csv", _with(HEAL, "--data", "{w}/nothing.csv"), "does not exist"),
    ("heal-unsupported-csv", _with(HEAL, "--data", "{w}/table.csv"), "unsupported type .csv"),
    ("heal-offline-hub-data", _with(HEAL, "--data", "nobody/no-such-data"), "Hub id but HF_HUB_OFFLINE=1 is set"),
    ("heal-unknown-format", _with(HEAL, "--data-format", "alpacca"), "Did you mean 'alpaca'"),
    ("heal-kd-without-teacher", _with(HEAL, "--loss", "kd"), "--teacher"),
    ("heal-teacher-missing", _with(HEAL, "--loss", "kd", "--teacher", "{w}/nothing"), "--teacher"),
    ("heal-output-under-file", _with(HEAL, "--output", "{w}/afile/out"), "is a file"),
    ("heal-output-readonly", _with(HEAL, "--output", "{w}/readonly/out"), "no write permission"),
    ("heal-output-exists", _with(HEAL, "--output", "{w}/existing"), "already exists"),
    ("heal-checkpoints-under-file", _with(HEAL, "--checkpoint-dir", "{w}/afile/ckpt"), "is a file"),
    ("report-binary-scores", ["report", "--scores", "{w}/binary.json", "--output", "{w}/out"], "not UTF-8"),
    *[
        (f"{name}-output-{where}", [*_with(argv, "--model", "{w}/model", "--output", output), "--overwrite"], words)
        for name, argv in (
            ("prune", PRUNE),
            ("prune-streamed", [*PRUNE, "--streaming"]),
            ("merge", _with(MERGE, "--num-layers", "1")),
            ("merge-groups-streamed", _with(MERGE, "--groups", "1-2", "--streaming", None)),
            ("heal", HEAL),
            ("width", WIDTH),
            ("sparsify", SPARSIFY),
        )
        for where, output, words in OUTPUT_ON_INPUT
    ],
    # requests that change nothing or contradict themselves name both values
    ("width-ratio-removes-nothing", _with(WIDTH, "--ratio", "0.001"), "width ratio 0.001 removes nothing"),
    (
        "width-inverted-schedule",
        [*WIDTH, "--schedule", "log-increase", "--min-ratio", "0.5", "--max-ratio", "0.1"],
        "min_ratio 0.5 is above max_ratio 0.1",
    ),
    (
        "width-both-bounds-ignore-ratio",
        [*WIDTH, "--schedule", "log-increase", "--min-ratio", "0.1", "--max-ratio", "0.5"],
        "ratio 0.3 would be ignored",
    ),
    ("width-bound-on-uniform", [*WIDTH, "--min-ratio", "0.1"], "min_ratio 0.1 shapes a log-increase schedule"),
    ("sparsify-owl-m-negative", [*SPARSIFY, "--allocation", "owl", "--owl-m", "-5"], "owl_m: Input should be greater"),
    ("sparsify-owl-lambda-0", [*SPARSIFY, "--allocation", "owl", "--owl-lambda", "0"], "owl_lambda 0 makes"),
    ("sparsify-alpha-epsilon-0", [*SPARSIFY, "--allocation", "alpha", "--alpha-epsilon", "0"], "alpha_epsilon 0"),
    # malformed files the commands read (no traceback)
    ("dsa-state-malformed", [*SPARSIFY, "--allocation", "dsa", "--dsa-state", "{w}/bad.jsonl"], "not valid JSON"),
    ("dsa-state-not-a-state", [*SPARSIFY, "--allocation", "dsa", "--dsa-state", "{w}/state.json"], "no 'fitness'"),
    ("prune-malformed-index", _with(PRUNE, "--model", "{w}/badindex"), "index.json: not valid JSON"),
    ("prune-malformed-index-streamed", [*_with(PRUNE, "--model", "{w}/badindex"), "--streaming"], "not valid JSON"),
    ("compare-ppl-string", ["compare", "{w}/results.json", "{w}/ppl-string.json"], "perplexity should be a mapping"),
    ("compare-ppl-value-string", ["compare", "{w}/results.json", "{w}/ppl-value-string.json"], "a number 'ppl'"),
    (
        "report-schema-tag-only",
        ["report", "--results", "{w}/schema-only.json", "--output", "{w}/out"],
        "a results file needs 'model'",
    ),
    ("score-output-inside-input", _with(SCORE, "--model", "{w}/model", "--output", "{w}/model/config.json"), "inside"),
    (
        "heal-output-is-teacher",
        [*_with(HEAL, "--loss", "kd", "--teacher", "{w}/model", "--output", "{w}/model"), "--overwrite"],
        "is the input",
    ),
    ("heal-output-contains-data", [*_with(HEAL, "--output", "{w}"), "--overwrite"], "contains the input"),
    (
        "report-output-contains-scores",
        ["report", "--scores", "{w}/binary.json", "--output", "{w}", "--overwrite"],
        "contains the input",
    ),
]

# The validation layer (issue 10's recipe schema) owns these: value ranges, and an existing
# output found before the model loads (here the model would fail to load, so only an
# early check names the output).
VALIDATION_CASES = [
    ("prune-layers-descending", _with(PRUNE, "--layers", "2-1"), ""),
    ("prune-layers-empty", _with(PRUNE, "--layers", ""), ""),
    ("prune-exists-before-loading", _with(PRUNE, "--model", "{w}/notgguf.gguf", "--output", "{w}/existing"), "exists"),
    ("merge-cosine-threshold-1.5", _with(MERGE, "--threshold", "1.5"), ""),
    ("merge-cosine-threshold--1.5", _with(MERGE, "--threshold", "-1.5"), ""),
    ("merge-cka-threshold-2", _with(MERGE, "--similarity", "cka", "--threshold", "2"), ""),
    ("heal-max-steps-0", _with(HEAL, "--max-steps", "0"), ""),
    ("heal-max-steps-negative", _with(HEAL, "--max-steps", "-3"), ""),
    ("heal-lr-negative", _with(HEAL, "--lr", "-0.001"), ""),
    ("heal-batch-size-0", _with(HEAL, "--train-batch-size", "0"), ""),
    ("heal-exists-before-loading", _with(HEAL, "--model", "{w}/notgguf.gguf", "--output", "{w}/existing"), "exists"),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad-inputs") / "tiny"
    tiny_model_dir(path)
    return path


@pytest.fixture
def offline(monkeypatch):
    """No hub: lookups fail at once, as on a machine without network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def readonly_when_root(monkeypatch):
    """As root, ``chmod 555`` does not stop writes; make permission checks see the directory as read-only."""
    if os.geteuid() != 0:
        return
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).name == "readonly" and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def _snapshot(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def _fill(argv: list[str], work: Path, model: Path) -> list[str]:
    return [part.format(w=work, m=model) for part in argv]


def _check(case_argv, message, model_dir, tmp_path, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _setup(work, model_dir)
    before, model_before = _snapshot(work), _snapshot(model_dir.parent)
    capsys.readouterr()
    argv = _fill(case_argv, work, model_dir)
    try:
        code = main([*argv, "--cache-dir", str(work / "cache")] if argv[0] not in ("report", "compare") else argv)
    finally:
        (work / "readonly").chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2, f"exit {code}, stderr {err!r}"
    assert err.startswith("layerprune: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert message.replace("{w}", str(work)) in err
    assert _snapshot(work) == before, "nothing is written (no output, temporary, checkpoint or cache folder)"
    assert _snapshot(model_dir.parent) == model_before


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(
    argv, message, model_dir, tmp_path, capsys, offline, readonly_when_root
):
    _check(argv, message, model_dir, tmp_path, capsys)


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES])
def test_out_of_range_value_is_one_line_and_leaves_nothing(argv, message, model_dir, tmp_path, capsys, offline):
    _check(argv, message, model_dir, tmp_path, capsys)


def test_matrix_covers_the_issue() -> None:
    """Issue 13 lists 27 bad inputs; the matrix holds them and more."""
    assert len(CASES) + len(VALIDATION_CASES) >= 27 + 20
