"""``prune --output X.gguf``: direct surgery from the command line, and the refusals around it (exit 2, one line)."""

from __future__ import annotations

import pytest
from gguf import GGUFReader

from gguf_files import write_tiny_gguf
from layerprune.cli import main
from layerprune.metrics import LayerScores, Scores


@pytest.fixture
def gemma3(tmp_path):
    return write_tiny_gguf(tmp_path / "gemma3.gguf", "gemma3", 12)


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err
    return err


def test_prune_writes_a_gguf_with_the_blocks_removed(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "llama.gguf", "llama", 6)
    assert main(["prune", "--model", str(source), "--layers", "1,4", "--output", str(tmp_path / "out.gguf")]) == 0
    fields = GGUFReader(tmp_path / "out.gguf").fields
    assert fields["llama.block_count"].contents() == 4
    assert fields["layerprune.layer_map"].contents() == [0, 2, 3, 5]
    assert "quantization kept" in capsys.readouterr().out


def test_a_pattern_breaking_removal_is_refused_and_nothing_is_written(gemma3, tmp_path, capsys):
    assert main(["prune", "--model", str(gemma3), "--layers", "7,8", "--output", str(tmp_path / "out.gguf")]) == 2
    _one_line_error(capsys, "every 6th layer is full attention", "layers [7, 8]", "--layers 6-11")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma3.gguf"]


def test_whole_periods_lets_the_metric_choose_which_period_goes(gemma3, tmp_path, capsys):
    # The six lowest (0-4 and 6) would move full-attention layer 5 to 0; the best run of six is 1-6.
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 0.05, 1.0, 1.0, 1.0, 1.0, 1.0]
    scores_file = tmp_path / "scores.json"
    Scores(model=str(gemma3), num_layers=12, metrics={"bi": LayerScores("bi", scores)}).save(scores_file)
    args = ["prune", "--model", str(gemma3), "--metric", "bi", "--num-layers", "6", "--scores", str(scores_file)]
    assert main([*args, "--output", str(tmp_path / "refused.gguf")]) == 2
    _one_line_error(capsys, "every 6th layer", "--whole-periods")
    assert main([*args, "--whole-periods", "--output", str(tmp_path / "out.gguf")]) == 0
    assert GGUFReader(tmp_path / "out.gguf").fields["layerprune.removed_layers"].contents() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("command", "extra"),
    [("merge", ["--num-layers", "1"]), ("heal", []), ("width", ["--ratio", "0.2"])],
)
def test_commands_that_rewrite_weights_refuse_a_gguf_output(tmp_path, capsys, command, extra):
    source = write_tiny_gguf(tmp_path / "llama.gguf", "llama", 4)
    assert main([command, "--model", str(source), *extra, "--output", str(tmp_path / "out.gguf")]) == 2
    _one_line_error(capsys, "cannot keep a GGUF's quantization", "--output DIR")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.gguf"]


@pytest.mark.parametrize(
    ("name", "model", "message"),
    [
        ("split", "m-00001-of-00002.gguf", "split GGUF"),
        ("directory", "a-directory", "direct surgery of a GGUF input"),
    ],
)
def test_bad_gguf_inputs_exit_2_with_one_line(tmp_path, capsys, name, model, message):
    if model.endswith(".gguf"):
        write_tiny_gguf(tmp_path / model, "llama", 4)
    else:
        (tmp_path / model).mkdir()
    assert main(["prune", "--model", str(tmp_path / model), "--layers", "1", "--output", str(tmp_path / "o.gguf")]) == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "o.gguf").exists()


def test_an_existing_gguf_output_needs_overwrite(tmp_path, capsys):
    source = write_tiny_gguf(tmp_path / "llama.gguf", "llama", 4)
    (tmp_path / "out.gguf").write_bytes(b"keep me")
    args = ["prune", "--model", str(source), "--layers", "1", "--output", str(tmp_path / "out.gguf")]
    assert main(args) == 2
    _one_line_error(capsys, "already exists")
    assert (tmp_path / "out.gguf").read_bytes() == b"keep me"
    assert main([*args, "--overwrite"]) == 0
    assert GGUFReader(tmp_path / "out.gguf").fields["llama.block_count"].contents() == 3
