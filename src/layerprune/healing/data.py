"""Healing data: instruction records or plain text → token ids with labels, split, cut and packed.

Every record is first turned into *segments* ``(text, trained)``; the segments are tokenised
one by one and concatenated, so the label mask is exact by construction: tokens of a
prompt segment get label −100, tokens of a trained segment get their own id. (The Dolly
script released with Lu et al., 2024 leaves every prompt token in the loss; tests here
check the mask token by token for each format.)

Formats (``DATA_FORMATS``): ``alpaca`` (instruction/input/output, rendered with the Alpaca
template, the default for instruction data), ``dolly`` (instruction/context/response, same
template), ``messages`` (chat turns rendered with the tokenizer's chat template; every
assistant turn is trained), ``text`` (plain text, every token trained). OpenAssistant
message rows (``message_id``/``parent_id``/``role``/``text``, as ``datasets`` returns
``OpenAssistant/oasst1``) are first rebuilt into best-reply conversations and then rendered
as ``messages`` (:func:`oasst_conversations`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from transformers import PreTrainedTokenizerBase

from layerprune.config import strict_config
from layerprune.data import load_hub, locate
from layerprune.errors import UserError
from layerprune.records import data_suffix, read_json, read_jsonl, read_parquet, read_text_file, require_field
from layerprune.registry import Registry

IGNORE = -100
ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
OASST_ROLES = {"prompter": "user", "assistant": "assistant"}
FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".txt")

Segments = list[tuple[str, bool]]
FormatFunction = Callable[[dict[str, Any], PreTrainedTokenizerBase], Segments]
DATA_FORMATS: Registry[FormatFunction] = Registry("data format")


@strict_config
class DataConfig:
    """Where the data comes from and how it is cut. ``validation_size`` < 1 is a fraction, else a count."""

    source: str = "dolly"
    format: str = "auto"
    seq_len: Annotated[int, Field(ge=2)] = 256
    packing: bool = False
    validation_size: Annotated[float, Field(ge=0)] = 0.05
    max_examples: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


class TokenizedDataset(torch.utils.data.Dataset):
    """Examples with a global ``sample_index`` (the key of the cached-prefix hidden states)."""

    def __init__(self, examples: Sequence[Example], first_index: int = 0) -> None:
        self.examples = list(examples)
        self.first_index = first_index

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        return {"input_ids": example.input_ids, "labels": example.labels, "sample_index": self.first_index + index}

    def token_count(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)


@dataclass
class HealingData:
    train: TokenizedDataset
    validation: TokenizedDataset | None
    config: DataConfig

    def limited(self, count: int) -> HealingData:
        """At most ``count`` training examples (the split is already shuffled), validation re-indexed after them."""
        train = TokenizedDataset(self.train.examples[:count])
        validation = TokenizedDataset(self.validation.examples, len(train)) if self.validation else None
        return HealingData(train, validation, self.config)

    def all_examples(self) -> list[Example]:
        """Training then validation examples, in ``sample_index`` order."""
        return self.train.examples + (self.validation.examples if self.validation else [])


@DATA_FORMATS.register("alpaca")
def alpaca_segments(record: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> Segments:
    """Alpaca template prompt (untrained) + ``output`` + EOS (trained); the no-input variant if ``input`` is empty."""
    instruction, extra = str(record["instruction"]).strip(), str(record.get("input") or "").strip()
    template = ALPACA_PROMPT if extra else ALPACA_PROMPT_NO_INPUT
    prompt = template.format(instruction=instruction, input=extra)
    return [(prompt, False), (str(record["output"]).strip() + tokenizer.eos_token, True)]


@DATA_FORMATS.register("dolly")
def dolly_segments(record: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> Segments:
    """Dolly's instruction/context/response rendered as Alpaca instruction/input/output."""
    mapped = {"instruction": record["instruction"], "input": record.get("context"), "output": record["response"]}
    return alpaca_segments(mapped, tokenizer)


@DATA_FORMATS.register("messages")
def message_segments(record: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> Segments:
    """Chat ``messages`` via the tokenizer's chat template; each assistant turn (with its end marker) is trained.

    Segment boundaries are differences of rendered prefixes: the text before assistant turn
    ``i`` is ``render(messages[:i], add_generation_prompt=True)``.
    """
    messages = record["messages"]
    if tokenizer.chat_template is None:
        raise UserError("the tokenizer has no chat template; 'messages' data needs one (or use --data-format text)")
    segments: Segments = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise UserError("the chat template does not render conversations prefix by prefix; cannot mask prompts")
        segments += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    return segments


@DATA_FORMATS.register("text")
def text_segments(record: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> Segments:
    """Plain text (field ``text``) followed by EOS; every token is trained (language-model healing)."""
    return [(str(record["text"]) + tokenizer.eos_token, True)]


def oasst_conversations(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAssistant message trees → one ``messages`` record per tree: the best-reply thread.

    From each root prompt, the thread follows the child with the lowest ``rank`` (rank 0 is the
    preferred reply; unranked children come last, then by ``created_date``), skipping messages
    that are ``deleted`` or whose ``review_result`` is false, and a child must alternate roles.
    A trailing user turn is dropped; trees without an assistant reply give no record.
    """
    children: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        if not row.get("deleted") and row.get("review_result") is not False:
            children.setdefault(row.get("parent_id"), []).append(row)

    def best_reply(row: dict[str, Any]) -> dict[str, Any] | None:
        replies = [c for c in children.get(row["message_id"], []) if c["role"] != row["role"]]
        ranked = sorted(replies, key=lambda c: (c.get("rank") is None, c.get("rank") or 0, c.get("created_date", "")))
        return ranked[0] if ranked else None

    conversations = []
    for root in children.get(None, []):
        thread, node = [], root if root["role"] == "prompter" else None
        while node is not None:
            thread.append({"role": OASST_ROLES[node["role"]], "content": node["text"]})
            node = best_reply(node)
        if thread and thread[-1]["role"] == "user":
            thread.pop()
        if thread:
            conversations.append({"messages": thread})
    return conversations


def detect_format(record: dict[str, Any]) -> str:
    """The format whose fields the record has."""
    keys = set(record)
    if {"message_id", "parent_id", "role", "text"} <= keys:
        return "oasst"
    for name, fields in (("messages", {"messages"}), ("alpaca", {"instruction", "output"})):
        if fields <= keys:
            return name
    if {"instruction", "response"} <= keys:
        return "dolly"
    if "text" in keys:
        return "text"
    raise UserError(f"cannot tell the data format from fields {sorted(keys)}; pass --data-format")


def tokenize_segments(segments: Segments, tokenizer: PreTrainedTokenizerBase) -> Example:
    """Concatenate the segments' tokens; the first segment adds the tokenizer's BOS (if it uses one)."""
    input_ids: list[int] = []
    labels: list[int] = []
    for position, (text, trained) in enumerate(segments):
        ids = tokenizer(text, add_special_tokens=position == 0)["input_ids"]
        input_ids += ids
        labels += ids if trained else [IGNORE] * len(ids)
    return Example(input_ids, labels)


def read_records(source: str) -> list[dict[str, Any]]:
    """Records from a named source (``dolly``, ``alpaca``, … resolved by :func:`layerprune.data.locate`),
    a json/jsonl/parquet/txt file (or its ``.gz``), or a Hub id ``ORG/NAME``."""
    location = locate(source, "train", hub_ids=True)
    if location.hub is not None:
        return load_hub(location.hub, f"healing data {source!r}")
    (path,) = location.files()
    return _read_file(path)


def _read_file(path: Path) -> list[dict[str, Any]]:
    suffix = data_suffix(path)
    if suffix == ".parquet":
        return read_parquet(path)
    if suffix == ".jsonl":
        records = read_jsonl(path)
    elif suffix == ".json":
        data = read_json(path)
        records = data if isinstance(data, list) else require_field(data, "data", str(path))
    elif suffix == ".txt":
        return [{"text": line} for line in read_text_file(path).splitlines() if line.strip()]
    else:
        raise UserError(f"data file {path}: unsupported type {suffix or '(none)'}; use {', '.join(FILE_SUFFIXES)}")
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise UserError(f"{path}: record {number} is a JSON {type(record).__name__}, not an object")
    return records


def _render(render: FormatFunction, name: str, record: dict[str, Any], tokenizer, where: str) -> Segments:
    """``render(record)``; a record without the format's fields is a :class:`UserError` naming it."""
    try:
        return render(record, tokenizer)
    except KeyError as error:
        found = ", ".join(map(repr, sorted(record))) or "none"
        raise UserError(f"{where}: no {error.args[0]!r} field, which {name} records need (found {found})") from None
    except (TypeError, AttributeError) as error:
        raise UserError(f"{where}: not a valid {name} record ({error})") from None


def load_healing_data(tokenizer: PreTrainedTokenizerBase, config: DataConfig, budget: int | None = None) -> HealingData:
    """Read, shuffle (seeded), split, tokenise, cut to ``seq_len`` (or pack) the healing data.

    ``budget`` is how many training examples the run will use (None: all). Without packing,
    only as many records are tokenised as give that many examples, and a fractional
    ``validation_size`` is then a fraction of the records the budget uses, not of the file.
    """
    records = read_records(config.source)
    if not records:
        raise UserError(f"no records in {config.source}")
    name = detect_format(records[0]) if config.format == "auto" else config.format
    if name == "oasst":
        records, name = oasst_conversations(records), "messages"
        if not records:
            raise UserError(f"no conversation with an assistant reply in {config.source}")
    render = DATA_FORMATS.get(name)
    requested, budget = budget, None if config.packing else budget

    def prepare(indices: list[int]) -> list[Example]:
        rendered = [_render(render, name, records[i], tokenizer, _where(config, i)) for i in indices]
        return _prepare(rendered, tokenizer, config)

    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(config.seed)).tolist()
    used = len(records) if budget is None or config.validation_size >= 1 else min(len(records), budget)
    validation_count = _validation_count(config.validation_size, used, len(records))
    train_indices = order[validation_count:][: config.max_examples]
    train = _prepare_until(prepare, train_indices, budget) if budget else prepare(train_indices)
    if not train:
        raise UserError(f"no training examples left from {config.source} at seq_len {config.seq_len} (--heal-seq-len)")
    if requested is not None and len(train) < requested:
        raise UserError(
            f"healing data {config.source} gives {len(train)} training windows of at most {config.seq_len} tokens, "
            f"fewer than the {requested} that --max-steps × --train-batch-size × --grad-accum requests"
        )
    held_out = prepare(order[:validation_count])
    validation = TokenizedDataset(held_out, first_index=len(train)) if held_out else None
    return HealingData(TokenizedDataset(train), validation, config)


def _prepare_until(prepare: Callable[[list[int]], list[Example]], indices: list[int], count: int) -> list[Example]:
    """Tokenise ``indices`` chunk by chunk until ``count`` examples are kept (records may drop out)."""
    examples: list[Example] = []
    position = 0
    while len(examples) < count and position < len(indices):
        chunk = max(16, (count - len(examples)) * 5 // 4)
        examples += prepare(indices[position : position + chunk])
        position += chunk
    return examples[:count]


def _where(config: DataConfig, index: int) -> str:
    return f"{config.source}: record {index + 1}"


def _validation_count(size: float, used: int, total: int) -> int:
    """Records held out: ``size`` × ``used`` (a fraction) or ``size`` (a count); ``total`` records exist."""
    count = round(size * used) if size < 1 else int(size)
    if size < 0 or count >= total:
        raise UserError(f"--validation-size {size} leaves no training data out of {total} records")
    return count


def _prepare(rendered: list[Segments], tokenizer: PreTrainedTokenizerBase, config: DataConfig) -> list[Example]:
    examples = [tokenize_segments(segments, tokenizer) for segments in rendered]
    if config.packing:
        cut = pack(examples, config.seq_len)
    else:
        cut = [Example(e.input_ids[: config.seq_len], e.labels[: config.seq_len]) for e in examples]
    return [e for e in cut if any(label != IGNORE for label in e.labels[1:])]


def pack(examples: Sequence[Example], seq_len: int) -> list[Example]:
    """Concatenate all examples and cut the stream into ``seq_len`` blocks (the incomplete tail is dropped).

    Attention is not blocked at example boundaries (the usual simple packing); labels keep
    each example's prompt mask.
    """
    ids = [token for e in examples for token in e.input_ids]
    labels = [label for e in examples for label in e.labels]
    blocks = range(0, len(ids) - seq_len + 1, seq_len)
    return [Example(ids[s : s + seq_len], labels[s : s + seq_len]) for s in blocks]


def collate(features: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: padding gets attention 0 and label −100."""
    length = max(len(f["input_ids"]) for f in features)

    def padded(key: str, value: int) -> torch.Tensor:
        return torch.tensor([f[key] + [value] * (length - len(f[key])) for f in features])

    input_ids = padded("input_ids", pad_token_id)
    attention_mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (length - len(f["input_ids"])) for f in features])
    sample_index = torch.tensor([f["sample_index"] for f in features])
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": padded("labels", IGNORE),
        "sample_index": sample_index,
    }
