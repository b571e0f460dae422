"""Healing data: exact prompt masks per format, cutoff, packing, validation split, file formats."""

from __future__ import annotations

import json

import pyarrow
import pyarrow.parquet
import pytest

from layerprune.errors import UserError
from layerprune.healing.data import (
    ALPACA_PROMPT,
    ALPACA_PROMPT_NO_INPUT,
    DATA_FORMATS,
    IGNORE,
    DataConfig,
    Example,
    collate,
    detect_format,
    load_healing_data,
    oasst_conversations,
    pack,
    read_records,
    tokenize_segments,
)
from tiny_models import tiny_tokenizer

TOKENIZER = tiny_tokenizer(bos=True)  # one id per character; it has no newline, which reads as <pad>
TOKENIZER.chat_template = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def encode(record: dict, name: str) -> Example:
    return tokenize_segments(DATA_FORMATS.get(name)(record, TOKENIZER), TOKENIZER)


def split_by_mask(example: Example) -> tuple[str, str]:
    """(text of the −100 tokens, text of the trained tokens), decoded with special tokens kept."""
    masked = [i for i, label in zip(example.input_ids, example.labels, strict=True) if label == IGNORE]
    trained = [label for label in example.labels if label != IGNORE]
    return TOKENIZER.decode(masked), TOKENIZER.decode(trained)


def test_alpaca_masks_exactly_the_prompt() -> None:
    example = encode({"instruction": "add 2 and 3", "input": "", "output": "5"}, "alpaca")
    prompt = ALPACA_PROMPT_NO_INPUT.format(instruction="add 2 and 3")
    masked, trained = split_by_mask(example)
    assert masked == "<s>" + prompt.replace("\n", "<pad>")
    assert trained == "5</s>"
    assert example.labels.count(IGNORE) == 1 + len(prompt)  # one id per character + BOS
    assert example.labels[-2:] == example.input_ids[-2:]


def test_alpaca_with_input_and_dolly_use_the_input_template() -> None:
    record = {"instruction": "name it", "input": "a cat", "output": "tom"}
    dolly = {"instruction": "name it", "context": "a cat", "response": "tom"}
    prompt = "<s>" + ALPACA_PROMPT.format(instruction="name it", input="a cat").replace("\n", "<pad>")
    assert split_by_mask(encode(record, "alpaca")) == (prompt, "tom</s>")
    assert encode(dolly, "dolly") == encode(record, "alpaca")


def test_messages_train_every_assistant_turn_and_nothing_else() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "why"},
        {"role": "assistant", "content": "because"},
    ]
    example = encode({"messages": messages}, "messages")
    spans = [("<|user|>hi</s><|assistant|>", False), ("yo</s>", True)]
    spans += [("<|user|>why</s><|assistant|>", False), ("because</s>", True)]
    expected = [trained for text, trained in spans for _ in TOKENIZER(text, add_special_tokens=False)["input_ids"]]
    assert [label != IGNORE for label in example.labels[1:]] == expected  # [0] is the BOS
    assert example.labels[0] == IGNORE
    assert split_by_mask(example)[1] == "yo</s>because</s>"


def test_plain_text_trains_every_token() -> None:
    example = encode({"text": "some text"}, "text")
    assert example.labels == example.input_ids
    assert TOKENIZER.decode(example.input_ids) == "<s>some text</s>"


def test_detect_format() -> None:
    assert detect_format({"instruction": "a", "input": "", "output": "b"}) == "alpaca"
    assert detect_format({"instruction": "a", "context": "", "response": "b"}) == "dolly"
    assert detect_format({"messages": []}) == "messages"
    assert detect_format({"text": "x"}) == "text"
    assert detect_format({"message_id": "a", "parent_id": None, "role": "prompter", "text": "x"}) == "oasst"
    with pytest.raises(UserError, match="data format"):
        detect_format({"question": "x"})


def test_pack_cuts_the_stream_into_full_blocks() -> None:
    examples = [Example([1, 2, 3], [IGNORE, 2, 3]), Example([4, 5, 6, 7], [IGNORE, IGNORE, 6, 7])]
    blocks = pack(examples, 3)
    assert [b.input_ids for b in blocks] == [[1, 2, 3], [4, 5, 6]]
    assert [b.labels for b in blocks] == [[IGNORE, 2, 3], [IGNORE, IGNORE, 6]]


def test_collate_pads_right_with_ignored_labels() -> None:
    batch = collate([{"input_ids": [5, 6], "labels": [IGNORE, 6], "sample_index": 3}], pad_token_id=0)
    batch2 = collate(
        [
            {"input_ids": [5], "labels": [5], "sample_index": 0},
            {"input_ids": [7, 8, 9], "labels": [7, 8, 9], "sample_index": 1},
        ],
        pad_token_id=0,
    )
    assert batch["sample_index"].tolist() == [3]
    assert batch2["input_ids"].tolist() == [[5, 0, 0], [7, 8, 9]]
    assert batch2["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert batch2["labels"].tolist() == [[5, IGNORE, IGNORE], [7, 8, 9]]


def write_records(path, count: int = 20) -> list[dict]:
    records = [{"instruction": f"say {i}", "input": "", "output": f"number {i}"} for i in range(count)]
    path.write_text("\n".join(json.dumps(r) for r in records))
    return records


def test_split_is_seeded_disjoint_and_sized(tmp_path) -> None:
    write_records(tmp_path / "d.jsonl")
    config = DataConfig(source=str(tmp_path / "d.jsonl"), seq_len=512, validation_size=0.25, seed=1)
    data = load_healing_data(TOKENIZER, config)
    again = load_healing_data(TOKENIZER, config)
    other = load_healing_data(TOKENIZER, DataConfig(**{**vars(config), "seed": 2}))
    outputs = [
        {TOKENIZER.decode([t for t in e.labels if t != IGNORE]) for e in part.examples}
        for part in (data.train, data.validation)
    ]
    assert (len(data.train), len(data.validation)) == (15, 5)
    assert not outputs[0] & outputs[1]
    assert len(outputs[0] | outputs[1]) == 20
    assert [e.input_ids for e in again.validation.examples] == [e.input_ids for e in data.validation.examples]
    assert [e.input_ids for e in other.validation.examples] != [e.input_ids for e in data.validation.examples]
    assert data.validation[0]["sample_index"] == 15  # global index after the training samples


def test_cutoff_drops_examples_without_trained_tokens(tmp_path) -> None:
    write_records(tmp_path / "d.jsonl", 4)
    prompt_tokens = 1 + len(ALPACA_PROMPT_NO_INPUT.format(instruction="say 0"))
    config = DataConfig(source=str(tmp_path / "d.jsonl"), validation_size=0, seq_len=prompt_tokens + 3)
    data = load_healing_data(TOKENIZER, config)
    assert all(len(e.input_ids) == prompt_tokens + 3 for e in data.train.examples)
    assert all(TOKENIZER.decode([t for t in e.labels if t != IGNORE]) == "num" for e in data.train.examples)
    with pytest.raises(UserError, match="no training examples"):
        load_healing_data(TOKENIZER, DataConfig(source=config.source, validation_size=0, seq_len=prompt_tokens))


def test_packing_gives_full_blocks_and_drops_blocks_without_trained_tokens(tmp_path) -> None:
    lines = [f"line {i} of text" for i in range(10)]
    (tmp_path / "d.txt").write_text("\n".join(lines))
    config = DataConfig(source=str(tmp_path / "d.txt"), validation_size=0, seq_len=16, packing=True)
    data = load_healing_data(TOKENIZER, config)
    total = sum(len(line) + 2 for line in lines)  # characters + BOS + EOS
    assert {len(e.input_ids) for e in data.train.examples} == {16}
    assert len(data.train) == total // 16
    write_records(tmp_path / "d.jsonl", 4)  # prompts of ~140 tokens: blocks of 50 hold mostly prompt only
    instruction = load_healing_data(
        TOKENIZER, DataConfig(source=str(tmp_path / "d.jsonl"), validation_size=0, seq_len=50, packing=True)
    )
    assert 0 < len(instruction.train) < sum(141 + 9 for _ in range(4)) // 50
    assert all(any(t != IGNORE for t in e.labels[1:]) for e in instruction.train.examples)


def test_file_formats(tmp_path) -> None:
    records = write_records(tmp_path / "d.jsonl", 3)
    (tmp_path / "d.json").write_text(json.dumps(records))
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(records), tmp_path / "d.parquet")
    (tmp_path / "d.txt").write_text("first line\n\nsecond line\n")
    for suffix in ("jsonl", "json", "parquet"):
        assert read_records(str(tmp_path / f"d.{suffix}")) == records
    assert read_records(str(tmp_path / "d.txt")) == [{"text": "first line"}, {"text": "second line"}]
    with pytest.raises(UserError, match="does not exist"):
        read_records(str(tmp_path / "missing.jsonl"))


def test_shortcut_reads_shared_dolly(data_dir, monkeypatch) -> None:
    monkeypatch.setenv("LAYERPRUNE_DATA", str(data_dir))
    records = read_records("dolly")
    assert len(records) == 15015
    assert detect_format(records[0]) == "dolly"


def oasst_row(message_id: str, parent: str | None, role: str, text: str, rank=None, **extra) -> dict:
    row = {"message_id": message_id, "parent_id": parent, "role": role, "text": text, "rank": rank}
    return row | {"deleted": False, "review_result": True, "created_date": f"2023-01-01T00:00:{message_id}"} | extra


def test_oasst_trees_become_best_reply_conversations() -> None:
    rows = [
        oasst_row("01", None, "prompter", "q1"),
        oasst_row("02", "01", "assistant", "second best", rank=1),
        oasst_row("03", "01", "assistant", "best", rank=0),
        oasst_row("04", "01", "assistant", "deleted best", rank=0, deleted=True),
        oasst_row("05", "03", "prompter", "follow-up"),
        oasst_row("06", "05", "assistant", "failed review", rank=0, review_result=False),
        oasst_row("07", "05", "assistant", "unranked"),
        oasst_row("08", "07", "prompter", "trailing question"),
        oasst_row("09", None, "prompter", "no reply at all"),
        oasst_row("10", None, "prompter", "q2"),
        oasst_row("12", "10", "assistant", "later unranked"),
        oasst_row("11", "10", "assistant", "earlier unranked"),
    ]
    assert oasst_conversations(rows) == [
        {
            "messages": [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "best"},
                {"role": "user", "content": "follow-up"},
                {"role": "assistant", "content": "unranked"},
            ]
        },
        {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "earlier unranked"}]},
    ]


def test_shared_oasst1_loads_as_masked_conversations(data_dir, monkeypatch) -> None:
    monkeypatch.setenv("LAYERPRUNE_DATA", str(data_dir))
    rows = read_records("oasst1")
    kept = [r for r in rows if not r["deleted"] and r["review_result"] is not False]
    roots = {r["message_id"] for r in kept if r["parent_id"] is None and r["role"] == "prompter"}
    best_first_replies = {r["text"] for r in kept if r["parent_id"] in roots and r["rank"] == 0}
    conversations = oasst_conversations(rows)
    assert len(conversations) == len({r["parent_id"] for r in kept if r["parent_id"] in roots}) == 188
    assert {c["messages"][1]["content"] for c in conversations} >= best_first_replies
    for conversation in conversations:
        roles = [m["role"] for m in conversation["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
    data = load_healing_data(TOKENIZER, DataConfig(source="oasst1", validation_size=0, seq_len=1_000_000))
    trained_runs = sorted(_runs_of_trained_tokens(e) for e in data.train.examples)
    assistant_turns = sorted(len(c["messages"]) // 2 for c in conversations)
    assert trained_runs == assistant_turns


def _runs_of_trained_tokens(example: Example) -> int:
    trained = [label != IGNORE for label in example.labels]
    return sum(1 for i, t in enumerate(trained) if t and (i == 0 or not trained[i - 1]))


def test_step_budget_tokenises_only_what_it_uses_and_scales_validation(tmp_path, monkeypatch) -> None:
    import layerprune.healing.data as data_module

    records = [{"instruction": f"task {i}", "output": f"answer {i}"} for i in range(1000)]
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rendered = []
    real = data_module._render

    def counting(*args, **kwargs):
        rendered.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(data_module, "_render", counting)
    config = DataConfig(source=str(path), validation_size=0.05)
    budgeted = load_healing_data(TOKENIZER, config, budget=20)
    assert len(budgeted.train) == 20 and len(budgeted.validation) == 1  # 5 % of the 20 used records
    assert len(rendered) <= 20 * 5 // 4 + 1 + 16, "only the records the budget reaches are tokenised"
    assert len(load_healing_data(TOKENIZER, config).validation) == 50  # no budget: 5 % of the file
    same_split = load_healing_data(TOKENIZER, DataConfig(source=str(path), validation_size=1))
    assert budgeted.train.examples == same_split.train.examples[:20]
    assert budgeted.validation.examples == same_split.validation.examples


def test_text_shorter_than_the_requested_windows_names_both_numbers(tmp_path) -> None:
    """Packed, 10 records of 13 tokens (BOS, 11 characters, EOS) give 8 windows of 16; a budget of 9 is refused."""
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps({"text": f"record {i:04d}"}) + "\n" for i in range(10)))
    config = DataConfig(source=str(path), seq_len=16, packing=True, validation_size=0)
    assert len(load_healing_data(TOKENIZER, config, budget=8).train) == 8
    with pytest.raises(UserError, match=r"gives 8 training windows of at most 16 tokens, fewer than the 9 that"):
        load_healing_data(TOKENIZER, config, budget=9)
