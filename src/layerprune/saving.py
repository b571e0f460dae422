"""Atomic saving of standard Hugging Face model directories plus ``layerprune.json``.

Everything is written into a temporary sibling directory ``.NAME.tmp-PID-XXXX`` that is
renamed into place only when complete, so a crash never leaves a half-written output and
an existing output is either kept whole or replaced whole. SIGTERM is turned into an
exception while the directory is written (as SIGINT already is), so that the temporary
directory is removed; one left by ``kill -9`` (its process is gone) is removed, and
reported, by the next save to the same output.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.errors import UserError
from layerprune.models.loading import resolve_dtype
from layerprune.provenance import RECORD_FILE, get_provenance

logger = logging.getLogger(__name__)
_TEMPORARY_KINDS = ("tmp", "old")
_IO_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EEXIST,
    errno.ENOTDIR,
    errno.EISDIR,
}


def check_output_dir(target: str | Path, overwrite: bool = False) -> Path:
    """Fail with a :class:`UserError` unless ``target`` can be (re)written as a directory.

    Checks, before any work: an existing ``target`` needs ``overwrite`` (and must be a
    directory), no ancestor may be a file, and the nearest existing ancestor must be writable.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise UserError(f"output {target} already exists; pass --overwrite to replace it")
    if target.exists() and not target.is_dir():
        raise UserError(f"output {target} is a file, not a directory")
    _check_parent_writable(target)
    return target


def check_output_file(path: str | Path) -> Path:
    """Fail with a :class:`UserError` unless ``path`` can be written as a file (an existing file is replaced)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output {path} is a directory; name a file such as {path / 'scores.json'}")
    _check_parent_writable(path)
    return path


def check_apart_from_inputs(output: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an ``output`` that is a local input, lies inside one, or contains one (whatever the flags).

    Saving there would replace or delete what the command reads, and the result's
    ``layerprune.json`` would name itself as its source. Inputs that are not local paths
    (hub ids, ``default``, ``None``) are skipped.
    """
    target = Path(output).expanduser().resolve()
    for given in inputs:
        source = Path(given).expanduser() if given is not None else None
        if source is None or not source.exists():
            continue
        source = source.resolve()
        if target == source or source in target.parents:
            where = "is" if target == source else "is inside"
            raise UserError(f"output {output} {where} the input {given}; write the result somewhere else")
        if source in target.parents or target in source.parents:
            raise UserError(f"output {output} contains the input {given}; write the result somewhere else")


def _check_parent_writable(target: Path) -> None:
    ancestor = target.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot write {target}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {target}: no write permission in {ancestor}")


@contextlib.contextmanager
def output_lock(target: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``target`` (the file ``<target>.lock`` beside it) while the block runs.

    A second writer of the same output fails at once with a :class:`UserError` naming the
    process that holds the lock. The lock file is removed on release (a writer that opened
    it just before sees it unlinked and takes a fresh one); the kernel releases the lock
    of a killed process.
    """
    path = Path(target).absolute().with_name(Path(target).name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            message = f"output {target} is being written by process {holder}; wait for it or choose another output"
            raise UserError(message) from None
        if path.exists() and os.path.samestat(os.fstat(handle.fileno()), path.stat()):
            break
        handle.close()  # the previous holder removed this file while we opened it: take a fresh one
    try:
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


@contextlib.contextmanager
def atomic_directory(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block completes."""
    target = check_output_dir(target, overwrite)
    remove_stale_temporaries(target)
    with _user_errors_for_io(target), terminate_raises():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_name(target, "tmp")
        tmp.mkdir()
        try:
            yield tmp
            _swap_into_place(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _temporary_name(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove ``.NAME.tmp-*``/``.NAME.old-*`` siblings of ``target`` whose writing process is gone; log each."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    stale = [
        path
        for kind in _TEMPORARY_KINDS
        for path in target.parent.glob(f".{target.name}.{kind}-*")
        if not _writer_alive(path.name.rsplit(f".{kind}-", 1)[1])
    ]
    for path in stale:
        logger.warning("removing %s, left by an interrupted earlier run", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def _writer_alive(suffix: str) -> bool:
    """Whether the process named in a temporary's ``PID-XXXX`` suffix still runs (no PID: an old name, stale)."""
    pid, _, rest = suffix.partition("-")
    if not (pid.isdigit() and rest):
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``SystemExit(143)`` so that ``finally`` clauses clean up.

    Only in the main thread and only where SIGTERM still has its default action (a handler
    the application installed is left alone).
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_terminate(signum: int, frame: Any) -> None:
    sys.exit(128 + signum)


@contextlib.contextmanager
def _user_errors_for_io(target: Path) -> Iterator[None]:
    """Permission and disk errors while writing ``target`` become a one-line :class:`UserError`."""
    try:
        yield
    except OSError as error:
        if error.errno not in _IO_ERRNOS:
            raise
        raise UserError(f"cannot write {target}: {error.strerror} ({error.filename or target})") from None


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        tmp.rename(target)
        return
    old = _temporary_name(target, "old")
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path that replaces the file ``target`` only if the block completes."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise UserError(f"output {target} already exists; pass --overwrite to replace it")
    check_output_file(target)
    remove_stale_temporaries(target)
    tmp = _temporary_name(target, "tmp")
    with _user_errors_for_io(target), terminate_raises():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            yield tmp
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = check_output_file(path)
    tmp = _temporary_name(path, "tmp")
    with _user_errors_for_io(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_text(text)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def write_legacy_keys(directory: Path) -> None:
    """Add the keys transformers 4.x reads, with the same values, so that older clients load the same model.

    transformers 5 writes RoPE settings only as ``rope_parameters``; 4.x reads ``rope_theta``
    (falling back silently to 10,000) and ``rope_scaling``. It also names the tokenizer class
    ``TokenizersBackend``, which 4.x does not know; ``PreTrainedTokenizerFast`` reads the same
    ``tokenizer.json`` in both.
    """
    config_path = directory / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        for section in [config, *(v for v in config.values() if isinstance(v, dict) and "rope_parameters" in v)]:
            _add_legacy_rope(section)
        write_json(config_path, config)
    tokenizer_path = directory / "tokenizer_config.json"
    if tokenizer_path.is_file():
        tokenizer = json.loads(tokenizer_path.read_text())
        if tokenizer.get("tokenizer_class") == "TokenizersBackend":
            tokenizer["tokenizer_class"] = "PreTrainedTokenizerFast"
            write_json(tokenizer_path, tokenizer)


def _add_legacy_rope(config: dict[str, Any]) -> None:
    """``rope_theta`` and (unless the default RoPE) ``rope_scaling`` from ``rope_parameters``."""
    parameters = config.get("rope_parameters")
    per_layer_type = isinstance(parameters, dict) and "full_attention" in parameters  # Gemma 3 style
    if per_layer_type:
        parameters = parameters["full_attention"]
    if not isinstance(parameters, dict) or "rope_theta" not in parameters:
        return
    config.setdefault("rope_theta", parameters["rope_theta"])
    if per_layer_type:  # 4.x has no per-type scaling; a top-level rope_scaling would be misread by 5.x (Gemma 4)
        return
    scaling = {key: value for key, value in parameters.items() if key != "rope_theta"}
    if scaling.get("rope_type", "default") != "default":
        config.setdefault("rope_scaling", {**scaling, "type": scaling["rope_type"]})


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def _write_narrow_modeling(model: PreTrainedModel, directory: Path) -> None:
    """A model with per-layer widths also needs its modeling module (see layerprune.width.heterogeneous)."""
    from layerprune.width.heterogeneous import is_narrow, write_modeling

    if is_narrow(model):
        write_modeling(model, directory)


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    output_dir: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    extra_record: dict[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save ``model`` (with its generation config) and ``tokenizer`` atomically, plus ``layerprune.json``.

    The dtype is kept unless ``dtype`` names another. ``layerprune.json`` records the
    source model, the removed source-layer indices, every step with its method and
    scores, and package versions. ``write_extra(directory)`` may add files to the output
    before it is moved into place. ``state_dict`` replaces the model's own tensors (the
    gathered weights of a model that FSDP or DeepSpeed ZeRO-3 shards across processes).
    """
    output_dir = Path(output_dir)
    target_dtype = resolve_dtype(dtype)
    if target_dtype != "auto":
        model = model.to(target_dtype)
        if state_dict is not None:
            state_dict = {key: value.to(target_dtype) for key, value in state_dict.items()}
    record = {**get_provenance(model).to_record(), **(extra_record or {})}
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        _write_narrow_modeling(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_legacy_keys(tmp)
        write_json(tmp / RECORD_FILE, record)
        if write_extra is not None:
            write_extra(tmp)
    return output_dir
