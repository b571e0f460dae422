"""Named data, resolved one way: explicit path → ``$LAYERPRUNE_DATA`` → embedded slices → Hugging Face Hub.

Every named source the recipes and the CLI accept (``wikitext2``, ``c4``, ``ptb``, ``dolly``,
``alpaca``, ``oasst1``, ``bookcorpus``, ``pg19`` and the zero-shot tasks' local files) is one
:class:`Source` in :data:`SOURCES`. A source names, per *role*, the files it needs inside a data
directory (the layout of the benchmark data folder, e.g. ``wikitext2/raw/wiki.test.raw``) and
the Hub dataset that holds the same data. Roles: ``test`` (perplexity), ``train`` (calibration
and healing text) and ``task`` (an lm-eval task's local files; its Hub copy is lm-eval's own).

:func:`locate` looks, in order, in

1. an explicit directory (``--data-dir``, ``evaluate.data_dir``) or an explicit file;
2. ``$LAYERPRUNE_DATA``;
3. the slices embedded in the package (gzip files in ``layerprune/data/embedded``, checked
   against the sha256 in its ``MANIFEST.json``; see :func:`embedded_root`);
4. the Hub, through ``datasets.load_dataset`` (cached in the HF cache), unless
   ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set.

A directory holds a source when every required file is there, plain or gzipped (``name.gz``).
Nothing found is one :class:`~layerprune.errors.UserError` listing every place tried and the
variable that fixes it. This follows scikit-learn's convention: small data ships inside the
package (``load_*``); larger data is fetched once into a cache (``fetch_*``).
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from layerprune.errors import UserError
from layerprune.records import file_sha256

Role = Literal["test", "train", "task"]
ENV_VAR = "LAYERPRUNE_DATA"
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "on", "yes", "true"}
# Suffixes that make a value a local path rather than a source name or a Hub id.
PATH_SUFFIXES = {".txt", ".raw", ".json", ".jsonl", ".parquet", ".csv", ".tsv", ".gz", ".bz2", ".xz", ".zst", ".arrow"}


@dataclass(frozen=True)
class HubSpec:
    """A ``datasets.load_dataset(path, name, split=split, data_files=data_files)`` call.

    ``max_rows`` reads only the first rows (streaming, so a large split is not downloaded whole).
    """

    path: str
    name: str | None = None
    split: str = "train"
    data_files: str | dict[str, str] | None = None
    max_rows: int | None = None

    def describe(self) -> str:
        return f"{self.path}" + (f"/{self.name}" if self.name else "") + f":{self.split}"


@dataclass(frozen=True)
class Source:
    """A named dataset: per role, the files it needs in a data directory and its Hub copy."""

    description: str
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hub: dict[str, HubSpec] = field(default_factory=dict)
    builtin: bool = False
    """Always present (inside Python itself): the default calibration text."""


def _task(description: str, *files: str) -> Source:
    return Source(description, files={"task": files})


SOURCES: dict[str, Source] = {
    "default": Source(
        "the Python Language Reference shipped inside CPython (pydoc_data.topics; calibration)",
        files={"train": ()},
        builtin=True,
    ),
    "wikitext2": Source(
        "WikiText-2 raw: the whole test split (perplexity); the train split (calibration, healing)",
        files={
            "test": ("wikitext2/raw/wiki.test.raw",),
            "train": ("wikitext2/raw_slices/wiki.train.nonempty.first1MB.txt",),
        },
        hub={
            "test": HubSpec("Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
            "train": HubSpec("Salesforce/wikitext", "wikitext-2-raw-v1", "train"),
        },
    ),
    "c4": Source(
        "C4 English: validation documents (perplexity), the first training shard (calibration, healing)",
        files={"test": ("c4_sample/c4_demo.jsonl",), "train": ("c4_sample/c4_demo.jsonl",)},
        hub={
            "test": HubSpec(
                "allenai/c4", None, "validation", {"validation": "en/c4-validation.00000-of-00008.json.gz"}, 1100
            ),
            "train": HubSpec("allenai/c4", None, "train", {"train": "en/c4-train.00000-of-01024.json.gz"}, 20_000),
        },
    ),
    "ptb": Source(
        "Penn Treebank test sentences (perplexity); Hub only",
        hub={"test": HubSpec("ptb_text_only", "penn_treebank", "test")},
    ),
    "bookcorpus": Source(
        "BookCorpus sentences (calibration); Hub only",
        hub={"train": HubSpec("bookcorpus/bookcorpus", max_rows=200_000)},
    ),
    "pg19": Source(
        "PG-19 public-domain books (calibration); Hub only", hub={"train": HubSpec("deepmind/pg19", max_rows=50)}
    ),
    "dolly": Source(
        "databricks-dolly-15k instruction records (healing)",
        files={"train": ("dolly15k/databricks-dolly-15k-v1-nocategory.jsonl",)},
        hub={"train": HubSpec("databricks/databricks-dolly-15k")},
    ),
    "alpaca": Source(
        "Stanford Alpaca instruction records (healing)",
        files={"train": ("alpaca_subset/alpaca_5000.json",)},
        hub={"train": HubSpec("tatsu-lab/alpaca")},
    ),
    "oasst1": Source(
        "OpenAssistant oasst1 message trees, validation split (healing)",
        files={"train": ("oasst1_en_valid/oasst1-validation-en.jsonl",)},
        hub={"train": HubSpec("OpenAssistant/oasst1", split="validation")},
    ),
    "arc_easy": _task("ARC-Easy test questions (lm-eval arc_easy)", "arc/ARC-Easy-Test.jsonl"),
    "arc_challenge": _task("ARC-Challenge test questions (lm-eval arc_challenge)", "arc/ARC-Challenge-Test.jsonl"),
    "piqa": _task("PIQA validation (lm-eval piqa)", "piqa/valid.jsonl", "piqa/valid-labels.lst"),
    "hellaswag": _task("HellaSwag validation (lm-eval hellaswag)", "hellaswag/hellaswag_val_full.txt.bz2"),
    "winogrande": _task("WinoGrande 1.1 dev (lm-eval winogrande)", "winogrande/dev.jsonl", "winogrande/dev-labels.lst"),
    "boolq": _task("SuperGLUE BoolQ validation (lm-eval boolq)", "boolq/val.jsonl"),
    "openbookqa": _task("OpenBookQA main test (lm-eval openbookqa)", "openbookqa/test.jsonl"),
    "mmlu": _task("MMLU test and dev CSVs, 57 subjects (lm-eval mmlu)", "mmlu/test", "mmlu/dev"),
}


class ChecksumError(UserError):
    """An embedded file whose bytes do not match the package's manifest."""


@dataclass(frozen=True)
class DataRoot:
    """A directory in the data layout; ``origin`` says how it was chosen (shown in messages)."""

    path: Path
    origin: str
    manifest: dict[str, Any] | None = None

    def find(self, relative: str) -> Path | None:
        """``relative`` or ``relative.gz`` under the root (a folder counts for folder entries), else None."""
        for candidate in (self.path / relative, self.path / f"{relative}.gz"):
            if candidate.exists():
                return candidate
        return None

    def file(self, relative: str) -> Path:
        """The file (checked against the manifest for embedded data); a missing one is a :class:`UserError`."""
        path = self.find(relative)
        if path is None:
            raise MissingData(f"{relative} is not in {self.describe()}")
        if self.manifest is not None:
            _check_digest(path, self.manifest, self.path)
        return path

    def holds(self, files: tuple[str, ...]) -> bool:
        return all(self.find(relative) is not None for relative in files)

    def describe(self) -> str:
        return f"{self.origin} ({self.path})"


class MissingData(UserError):
    """A file that a source needs is not in the chosen directory."""


@dataclass(frozen=True)
class Location:
    """Where one request resolved: a local file, a data directory holding the source, or the Hub."""

    value: str
    role: str
    path: Path | None = None
    root: DataRoot | None = None
    hub: HubSpec | None = None

    def files(self) -> list[Path]:
        """The local files this location reads (none for the Hub)."""
        if self.path is not None:
            return [self.path]
        if self.root is None:
            return []
        return [self.root.file(relative) for relative in SOURCES[self.value].files[self.role]]

    def describe(self) -> str:
        if self.path is not None:
            return str(self.path)
        if SOURCES.get(self.value, Source("")).builtin:
            return "built into Python (pydoc_data.topics)"
        if self.root is not None:
            return self.root.describe()
        return f"Hugging Face Hub ({self.hub.describe()})" if self.hub else "Hugging Face Hub (lm-eval's own copy)"


# --- the roots ---------------------------------------------------------------------------------


def embedded_dir() -> Path:
    return Path(str(resources.files("layerprune.data") / "embedded"))


@cache
def _manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "MANIFEST.json").read_text(encoding="utf-8"))["files"]


def embedded_root() -> DataRoot:
    """The slices shipped in the package, with their manifest of sha256 sums."""
    directory = embedded_dir()
    return DataRoot(directory, "embedded", _manifest(directory))


def _check_digest(path: Path, manifest: dict[str, Any], directory: Path) -> None:
    relative = path.relative_to(directory).as_posix()
    expected = manifest.get(relative, {}).get("sha256")
    digest = _sha256(path)
    if digest != expected:
        raise ChecksumError(
            f"embedded data file {path} is damaged (sha256 {digest[:12]}…, manifest {str(expected)[:12]}…); "
            f"reinstall layerprune or set {ENV_VAR} to a folder holding {relative.removesuffix('.gz')}"
        )


@cache
def _sha256_cached(path: Path, size: int, mtime: float) -> str:
    return file_sha256(path)


def _sha256(path: Path) -> str:
    status = path.stat()
    return _sha256_cached(path, status.st_size, status.st_mtime)


def roots(data_dir: str | Path | None = None) -> list[DataRoot | str]:
    """The directories searched, in order; a place that is not set or not there is a string saying so."""
    found: list[DataRoot | str] = []
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise UserError(f"data directory {data_dir} does not exist")
        found.append(DataRoot(path, "--data-dir"))
    configured = os.environ.get(ENV_VAR)
    if not configured:
        found.append(f"${ENV_VAR} (not set)")
    elif Path(configured).is_dir():
        found.append(DataRoot(Path(configured), f"${ENV_VAR}"))
    else:
        found.append(f"${ENV_VAR}={configured} (not a directory)")
    found.append(embedded_root())
    return found


def hub_offline() -> str | None:
    """The variable that switches the Hub off (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``), if one is set."""
    return next((name for name in OFFLINE_VARS if os.environ.get(name, "").strip().lower() in _TRUE), None)


# --- resolving ---------------------------------------------------------------------------------


def names(role: str) -> list[str]:
    """The source names that serve ``role``."""
    return sorted(name for name, source in SOURCES.items() if role in source.files or role in source.hub)


def looks_like_path(value: str) -> bool:
    """A value that can only mean a local file: it exists, starts with ``/ . ~``, has a data suffix or 2+ slashes."""
    path = Path(value).expanduser()
    return path.exists() or value.startswith(("/", ".", "~")) or value.count("/") > 1 or path.suffix in PATH_SUFFIXES


def locate(value: str, role: Role, data_dir: str | Path | None = None, hub_ids: bool = False) -> Location:
    """Where ``value`` (a source name, a local file or, with ``hub_ids``, a Hub ``ORG/NAME``) resolves.

    Names search :func:`roots` then the Hub; errors are one line (see the module docstring).
    """
    if value in SOURCES and value in names(role):
        return _locate_name(value, role, data_dir)
    path = Path(value).expanduser()
    if path.is_file():
        return Location(value, role, path=path)
    if looks_like_path(value):
        raise UserError(f"data file {value} does not exist")
    if hub_ids and value.count("/") == 1:
        require_hub(value, role)
        return Location(value, role, hub=HubSpec(value, split="validation" if role == "test" else "train"))
    close = difflib.get_close_matches(value, names(role), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    extra = ", a Hub id ORG/NAME" if hub_ids else ""
    raise UserError(f"unknown data source {value!r}{hint} (use one of {', '.join(names(role))}, a file{extra})")


def _locate_name(name: str, role: str, data_dir: str | Path | None) -> Location:
    source = SOURCES[name]
    if source.builtin:
        return Location(name, role)
    files = source.files.get(role, ())
    tried = []
    for root in roots(data_dir):
        if isinstance(root, str):
            tried.append(root)
        elif files and root.holds(files):
            return Location(name, role, root=root)
        else:
            tried.append(f"{root.origin} ({'no ' + files[0] if files else 'no local copy of this source'})")
    hub = source.hub.get(role)
    offline = hub_offline()
    if offline is None:
        return Location(name, role, hub=hub)
    fix = f"set {ENV_VAR} to a folder holding {', '.join(files)}" if files else f"unset {offline} to use the Hub"
    where = f"the Hub ({offline}={os.environ[offline]})"
    raise UserError(f"no local copy of {name} ({role}): tried {', '.join([*tried, where])}; {fix}")


def require_hub(value: str, role: str) -> None:
    """A Hub id while offline is a :class:`UserError` naming the variable and the local alternatives."""
    offline = hub_offline()
    if offline is not None:
        local = ", ".join(n for n in names(role) if SOURCES[n].files.get(role))
        raise UserError(
            f"{value!r} is a Hugging Face Hub id but {offline}={os.environ[offline]} is set: unset it to download, "
            f"or use local data ({local}, a file, or ${ENV_VAR})"
        )


def load_hub(spec: HubSpec, what: str) -> list[dict[str, Any]]:
    """Rows of ``spec`` from the Hub (cached by ``datasets``); failure to reach it is a one-line error."""
    import datasets

    try:
        rows = datasets.load_dataset(
            spec.path, spec.name, split=spec.split, data_files=spec.data_files, streaming=spec.max_rows is not None
        )
        return [dict(row) for row in itertools.islice(rows, spec.max_rows)]
    except Exception as error:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"cannot load {what} from the Hugging Face Hub ({spec.describe()}): {type(error).__name__}: {first}. "
            f"Offline, set {ENV_VAR} to a local data folder or pass a local file"
        ) from None


def describe_sources(data_dir: str | Path | None = None) -> Iterator[tuple[str, str, str, int | None]]:
    """``(name, role, where it resolves now, local bytes)`` for every source and role (``layerprune data``)."""
    for name, source in sorted(SOURCES.items()):
        for role in sorted({*source.files, *source.hub}):
            try:
                location = locate(name, role, data_dir)  # type: ignore[arg-type]
                size = sum(path.stat().st_size for path in _walk(location.files())) if location.root else None
                yield name, role, location.describe(), size
            except UserError as error:
                yield name, role, f"nowhere: {error}", None


def _walk(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        yield from (p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
