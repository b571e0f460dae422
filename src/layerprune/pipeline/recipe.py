"""The recipe: one validated file that takes a model through select → width → sparsify → heal → evaluate → report.

A recipe is YAML (or JSON) with these sections; every default lives in the settings class the
section *is* (``CalibrationConfig``, ``MethodConfig``, ``MergeConfig``, ``EvalConfig``, …)::

    schema_version: 1
    model: {spec: default}                # spec, dtype, device_map, trust_remote_code, allow_pickle, cache_dir
    calibration: {source: default, samples: 10, seq_len: 128}   # shared by every stage that needs text
    select: {metric: bi, ratio: 0.25}     # exactly one of metric (+ num_layers | ratio), layers, merge, replace
    width: {method: slimgpt, ratio: 0.135, schedule: log-increase}    # heads and FFN channels (WidthConfig)
    sparsify: {pruner: wanda, sparsity: 0.5, allocation: owl}         # zeros in place (SparsifyConfig)
    heal: {method: partial, loss: ce, data: dolly, train: {max_steps: 20}, schedule: one-shot}
    evaluate: {ppl: [wikitext2], perplexity: {max_windows: 8}}  # plus dense: true (evaluate the dense model once)
    report: {plots: true}
    output: {dtype: null}

Unknown keys, wrong types, out-of-range values and exclusive keys given together are a
:class:`~layerprune.config.ConfigError` naming the key path (``hael`` → did you mean ``heal``),
raised before any model loads. A recipe makes the model smaller with at least one of ``select``
(depth), ``width`` and ``sparsify``, applied in that order; ``width`` and ``sparsify`` calibrate
on the shared ``calibration`` section. A section with a ``name`` (``heal.method``, ``heal.loss``) or a
``source`` (``heal.data``) accepts that value alone as shorthand: ``heal: {loss: kd}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from layerprune.calibration import CalibrationConfig
from layerprune.config import ConfigError, describe_errors, reject_coercion, strict_config
from layerprune.data import locate
from layerprune.data import names as data_names
from layerprune.errors import UserError
from layerprune.evaluation.runner import EvalConfig
from layerprune.evaluation.tasks import expand_tasks
from layerprune.healing import DATA_FORMATS, LOSSES, METHODS, DataConfig, LossConfig, MethodConfig, TrainConfig
from layerprune.merging import MergeConfig
from layerprune.merging.streamline import StreamlineConfig
from layerprune.metrics import METRICS, ScoringContext
from layerprune.models.loading import check_model_spec, resolve_dtype
from layerprune.width import SparsifyConfig, WidthConfig

SCHEMA_VERSION = 1
_SCORING = ScoringContext(progress=False)
PositiveInt = Annotated[int, Field(ge=1)]


def check_dtype(cls: type, name: str | None) -> str | None:
    """A dtype name that :func:`~layerprune.models.loading.resolve_dtype` knows (``None`` keeps the model's)."""
    if name is not None:
        resolve_dtype(name)
    return name


class Section(BaseModel):
    """A recipe section: unknown keys are errors, and values are not coerced between kinds."""

    model_config = ConfigDict(extra="forbid")
    _no_coercion = field_validator("*", mode="before")(reject_coercion)


class ModelSection(Section):
    """Which model to start from and how to load it (see :func:`layerprune.models.load_model`)."""

    spec: str = "default"
    dtype: str | None = None
    device_map: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    cache_dir: str | None = None

    _dtype = field_validator("dtype")(check_dtype)


class SelectSection(Section):
    """Which layers go: one of ``metric`` (with ``num_layers`` or ``ratio``), ``layers``, ``merge``, ``replace``.

    ``ratio`` R removes round(R·L) layers with halves rounded up. ``layers`` is a list of
    indices or a string such as ``"20-27"`` or ``"3,5,7-9"`` (ranges ascending, not empty).
    ``whole_periods`` (with ``metric`` and ``output.format: gguf``): for a family whose attention
    pattern llama.cpp derives from the layer index (every 6th layer global in gemma3, ...), remove
    runs of whole periods, the metric ranking them (:func:`~layerprune.gguf.patterns.whole_periods`).
    """

    metric: str | None = None
    num_layers: PositiveInt | None = None
    ratio: Annotated[float, Field(gt=0, lt=1)] | None = None
    exclude_first: Annotated[int, Field(ge=0)] = _SCORING.exclude_first
    exclude_last: Annotated[int, Field(ge=0)] = _SCORING.exclude_last
    batch_size: PositiveInt = _SCORING.batch_size
    angular_tokens: Literal["last", "all"] = _SCORING.angular_tokens
    sleb_steps: PositiveInt | None = None
    seed: int = _SCORING.seed
    layers: list[int] | None = None
    merge: MergeConfig | None = None
    replace: StreamlineConfig | None = None
    whole_periods: bool = False

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, name: str | None) -> str | None:
        if name is not None:
            METRICS.get(name)
        return name

    @field_validator("layers", mode="before")
    @classmethod
    def _layer_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            check_layer_list(value)
        return parse_layer_list(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_kind(self) -> SelectSection:
        given = [key for key in ("metric", "layers", "merge", "replace") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of metric, layers, merge, replace (got {', '.join(given) or 'none'})")
        counts = [key for key in ("num_layers", "ratio") if getattr(self, key) is not None]
        if self.metric is not None and len(counts) != 1:
            raise ValueError("with metric, give exactly one of num_layers or ratio")
        if self.metric is None and counts:
            raise ValueError(f"{counts[0]} goes with metric (merge and replace take their own)")
        if self.whole_periods and self.metric is None:
            raise ValueError("whole_periods lets the metric choose the periods: it goes with metric, not layers")
        if self.merge is not None:
            stops = [k for k in ("threshold", "num_layers", "ratio") if getattr(self.merge, k) is not None]
            if len(stops) != 1:
                raise ValueError("merge: give exactly one of threshold, num_layers or ratio")
        return self

    @property
    def kind(self) -> str:
        return next(key for key in ("metric", "layers", "merge", "replace") if getattr(self, key) is not None)

    def scoring_settings(self) -> dict[str, Any]:
        """The :class:`ScoringContext` fields this selection scores with."""
        keys = ("seed", "batch_size", "angular_tokens", "sleb_steps", "exclude_first", "exclude_last")
        return {key: getattr(self, key) for key in keys}


class HealSection(Section):
    """Healing: which parameters train × which loss, on which data, for which budget; one-shot or ``1:k:n``.

    ``schedule: 1:k:n`` (Lu et al., 2024) removes the selection's n layers k at a time, healing
    after each removal and re-scoring the healed model before the next (needs ``select.metric``).
    """

    method: MethodConfig = Field(default_factory=MethodConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    teacher: str | None = "source"
    schedule: str = "one-shot"

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, values: Any) -> Any:
        if isinstance(values, dict):
            values = dict(values)
            for key, field in (("method", "name"), ("loss", "name"), ("data", "source")):
                if isinstance(values.get(key), str):
                    values[key] = {field: values[key]}
        return values

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, text: str) -> str:
        if text != "one-shot":
            parse_schedule(text)
        return text

    @model_validator(mode="after")
    def _consistent(self) -> HealSection:
        METHODS.get(self.method.name)
        LOSSES.get(self.loss.name)
        if self.data.format != "auto" and self.data.format not in DATA_FORMATS:
            raise ValueError(f"data.format: {DATA_FORMATS.unknown_message(self.data.format)}")
        if self.loss.needs_teacher and not self.teacher:
            raise ValueError(f"loss {self.loss.name!r} distils from a teacher: set heal.teacher (or 'source')")
        if self.train.resume:
            raise ValueError("train.resume is managed by `layerprune run` (re-run the same command to resume)")
        return self

    @property
    def steps(self) -> list[int] | None:
        """Layers removed per step of an iterative schedule (None: one-shot)."""
        return None if self.schedule == "one-shot" else parse_schedule(self.schedule)


@strict_config
class EvaluateSection(EvalConfig):
    """:class:`EvalConfig` plus ``dense`` (evaluate the dense model too, once, reused by every run and cell)
    and ``unhealed`` (evaluate the selected model before healing as well)."""

    dense: bool = True
    unhealed: bool = False

    def __post_init__(self) -> None:
        if not (self.tasks or self.ppl or self.speed is not None):
            raise UserError("nothing to evaluate: give tasks, ppl and/or speed")

    def config(self) -> EvalConfig:
        """The :class:`EvalConfig` part."""
        return EvalConfig(**{key: getattr(self, key) for key in EvalConfig.__pydantic_fields__})


class ReportSection(Section):
    """``report.md`` with figures (layer scores, similarity, loss curve, dense against final)."""

    plots: bool = True


class OutputSection(Section):
    """``dtype`` of every saved model (default: keep the loaded dtype); ``format``: ``hf`` (a Hugging Face
    directory) or ``gguf``: the selection is written as ``model.gguf`` by direct surgery of the GGUF the
    recipe starts from, its blocks copied in their quantization types (:mod:`layerprune.gguf.surgery`);
    ``export: gguf[:f16|bf16|q8_0|f32]`` converts the final saved model with llama.cpp's converter
    (:mod:`layerprune.gguf.export`), for models whose weights changed (healed, merged, width-pruned)."""

    dtype: str | None = None
    format: Literal["hf", "gguf"] = "hf"
    export: str | None = None

    @field_validator("export")
    @classmethod
    def _export(cls, text: str | None) -> str | None:
        from layerprune.gguf.export import parse_export

        parse_export(text)
        return text

    _dtype = field_validator("dtype")(check_dtype)


class Recipe(Section):
    """A whole pipeline; see the module docstring for the sections."""

    schema_version: Literal[1] = SCHEMA_VERSION
    description: str = ""
    model: ModelSection = Field(default_factory=ModelSection)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    select: SelectSection | None = None
    width: WidthConfig | None = None
    sparsify: SparsifyConfig | None = None
    heal: HealSection | None = None
    evaluate: EvaluateSection | None = None
    report: ReportSection | None = Field(default_factory=ReportSection)
    output: OutputSection = Field(default_factory=OutputSection)

    @model_validator(mode="after")
    def _stages_fit(self) -> Recipe:
        if self.select is None and self.width is None and self.sparsify is None:
            raise ValueError("nothing makes the model smaller: give select, width and/or sparsify")
        if self.output.format == "gguf":
            _check_gguf_output(self)
        elif self.select is not None and self.select.whole_periods:
            raise ValueError("select.whole_periods applies to output.format gguf only (a directory keeps layer types)")
        if self.sparsify is not None and self.heal is not None:
            raise ValueError("heal would fill in the zeros that sparsify leaves (no masked healing): drop one of them")
        steps = self.heal.steps if self.heal else None
        if steps is None:
            return self
        if self.select is None or self.select.metric is None:
            raise ValueError("heal.schedule 1:k:n re-scores after each step: it needs select.metric")
        if self.width is not None:
            raise ValueError("heal.schedule 1:k:n cuts layers after width pruning: use a one-shot schedule with width")
        if self.select.num_layers is not None and sum(steps) != self.select.num_layers:
            raise ValueError(
                f"heal.schedule removes {sum(steps)} layers but select.num_layers is {self.select.num_layers}"
            )
        return self

    def check_data(self) -> None:
        """Resolve every data name and path the recipe uses (embedded files checksummed) before any work.

        ``calibration.source``, ``heal.data.source``, ``evaluate.ppl`` and the local tasks of
        ``evaluate.tasks`` (unless ``harness.skip_missing``); a problem is one :class:`UserError`.
        """
        locations = [locate(self.calibration.source, "train")]
        if self.heal is not None:
            locations.append(locate(self.heal.data.source, "train", hub_ids=True))
        evaluate = self.evaluate
        if evaluate is not None:
            locations += [locate(name, "test", evaluate.data_dir) for name in evaluate.ppl]
            tasks = [name for name in expand_tasks(evaluate.tasks)[0] if name in data_names("task")]
            if not evaluate.harness.skip_missing:
                locations += [locate(name, "task", evaluate.data_dir) for name in tasks]
        for location in locations:
            location.files()

    def dump(self) -> dict[str, Any]:
        """Every key with its resolved value (JSON types)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.dump(), sort_keys=False, allow_unicode=True)

    def to_json(self) -> str:
        return json.dumps(self.dump(), indent=2)


def _check_gguf_output(recipe: Recipe) -> None:
    """``output.format: gguf`` keeps the quantization, so only a depth selection (metric or layers) of a GGUF fits."""
    spec = recipe.model.spec
    if spec != "default" and not spec.endswith(".gguf"):
        raise ValueError(
            f"output.format gguf prunes a GGUF directly: model.spec must be default or a .gguf file, not {spec}"
        )
    rewriting = [name for name in ("width", "sparsify", "heal") if getattr(recipe, name) is not None]
    if recipe.select is not None and recipe.select.kind in ("merge", "replace"):
        rewriting.insert(0, f"select.{recipe.select.kind}")
    if recipe.output.export:
        raise ValueError("output.format gguf is already a GGUF (quantization kept): drop output.export")
    if rewriting or recipe.select is None:
        what = ", ".join(rewriting) or "no select"
        raise ValueError(
            f"output.format gguf copies quantized blocks unchanged; {what} rewrites weights and cannot keep the "
            "quantization: use select.metric or select.layers alone, or output.format hf with output.export gguf"
        )


def parse_layer_list(text: str) -> list[int]:
    """``"3,5,7"`` or ``"3-5,9"`` → ``[3, 4, 5, 9]``; a descending range or an empty list is an error."""
    values: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        start, dash, end = part.partition("-")
        try:
            first, last = int(start), int(end if dash else start)
        except ValueError:
            raise UserError(f"cannot read layer list {text!r}; write it like 3,5,7 or 3-5,9") from None
        if last < first:
            raise UserError(f"layer range {part!r} is descending; write it as {last}-{first}")
        values.extend(range(first, last + 1))
    check_layer_list(values)
    return values


def check_layer_list(layers: list[Any]) -> None:
    """A list of layers to remove is not empty, holds integers ≥ 0 (no booleans), and names each layer once."""
    if not layers:
        raise UserError("the layer list is empty: it would remove nothing (give at least one index)")
    if not all(isinstance(index, int) and not isinstance(index, bool) for index in layers):
        raise UserError(f"layer indices are integers, got {layers}")
    negative = [index for index in layers if index < 0]
    if negative:
        raise UserError(f"layer index {negative[0]} is negative; indices count from 0")
    repeated = sorted({index for index in layers if layers.count(index) > 1})
    if repeated:
        raise UserError(f"layer {repeated[0]} is given more than once in {layers}; name each layer once")


def parse_schedule(text: str) -> list[int]:
    """``"1:k:n"`` → layers removed at each step, e.g. ``1:4:10`` → ``[4, 4, 2]`` (the last takes the remainder)."""
    try:
        rounds, step, total = (int(part) for part in text.split(":"))
    except ValueError:
        raise UserError(f"cannot read schedule {text!r}; write one-shot or 1:k:n, e.g. 1:4:8") from None
    if rounds != 1 or not 0 < step <= total:
        raise UserError(f"schedule {text!r}: the form is 1:k:n with 0 < k ≤ n (one healing run per step)")
    return [min(step, total - done) for done in range(0, total, step)]


# --- checks before any work ---------------------------------------------------------------


def check_model_specs(recipe: Recipe) -> None:
    """``model.spec`` and a ``heal.teacher`` that names a model: local paths exist (hub ids wait for the load)."""
    check_model_spec(recipe.model.spec, "model.spec")
    if recipe.heal is not None and recipe.heal.teacher not in (None, "source"):
        check_model_spec(recipe.heal.teacher, "heal.teacher")


def check_task_names(recipe: Recipe) -> None:
    """``evaluate.tasks``: suite names, or task names lm-eval's index knows."""
    if recipe.evaluate is None or not recipe.evaluate.tasks:
        return
    from layerprune.evaluation.harness import check_task_names as check_with
    from layerprune.evaluation.harness import task_manager
    from layerprune.evaluation.tasks import expand_tasks

    try:
        check_with(expand_tasks(recipe.evaluate.tasks)[0], task_manager())
    except UserError as error:
        raise UserError(f"evaluate.tasks: {error}") from None


RECIPE_CHECKS: list[Callable[[Recipe], None]] = [check_model_specs, check_task_names, Recipe.check_data]
"""What the file system and the project's tables can show about a valid :class:`Recipe`, in order:
model paths, task names, then every data source through the data resolver (:meth:`Recipe.check_data`)."""


def check_before_work(recipe: Recipe) -> None:
    """Every check that needs no model: ``run`` and ``--dry-run`` call it before anything loads or is written.

    The schema (:func:`validate_recipe`) has already checked keys, types, ranges and names
    (metrics, methods, losses, data formats, schedulers, dtypes, layer lists); this adds
    :data:`RECIPE_CHECKS`. What needs the model (an index beyond its depth) is checked by
    the runner after the load, before any stage writes.
    """
    for check in RECIPE_CHECKS:
        check(recipe)


# --- reading, overriding, shipped recipes -------------------------------------------------


def validate_recipe(data: dict[str, Any], origin: str = "recipe") -> Recipe:
    """A :class:`Recipe` from plain data; any problem is one :class:`ConfigError` line naming the key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a recipe is a mapping of sections, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{origin}: {describe_errors(error, Recipe)}") from None


def load_recipe(source: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file or shipped name, apply ``key.path=value`` overrides, and validate it."""
    path = resolve_shipped(str(source), "recipes")
    data = read_mapping(path)
    for override in overrides:
        key, value = parse_override(override)
        set_key(data, key, value)
    return validate_recipe(data, str(source))


def read_mapping(path: Path) -> dict[str, Any]:
    """A YAML/JSON file's top-level mapping."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=RecipeLoader)
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    return data


class RecipeLoader(yaml.SafeLoader):
    """YAML without YAML 1.1's base-60 numbers, so that a schedule ``1:4:8`` stays a string (not 3848),
    and without silently dropped keys: a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep)


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def parse_override(text: str) -> tuple[str, Any]:
    """``"heal.train.max_steps=20"`` → ``("heal.train.max_steps", 20)`` (the value is read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text!r}: write it as key.path=value, e.g. heal.train.max_steps=20")
    try:
        return key.strip(), yaml.load(value, Loader=RecipeLoader)
    except yaml.YAMLError:
        raise UserError(f"--set {text!r}: the value is not valid YAML") from None


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (dotted) in ``data``; a scalar set on a section with a ``name``/``source`` sets that.

    An empty segment (``heal..max_steps``) or a path through a value that is not a section (a list,
    a number) is a :class:`UserError` naming it.
    """
    *parents, last = parts = key.split(".")
    if "" in parts:
        where = parts.index("") + 1
        raise UserError(f"key {key!r} has an empty segment (part {where}); write it like heal.train.max_steps")
    node = data
    for depth, part in enumerate(parents):
        child = node.get(part)
        if (
            child is not None
            and not isinstance(child, dict)
            and not (isinstance(child, str) and part in _SHORTHAND_FIELD)
        ):
            where = ".".join(parents[: depth + 1])
            raise UserError(f"cannot set {key}: {where} is a {type(child).__name__}, not a section with keys")
        if not isinstance(child, dict):
            child = {} if child is None or isinstance(child, str) else child
            if isinstance(node.get(part), str):  # a shorthand such as heal.loss: kd
                child = {_SHORTHAND_FIELD.get(part, "name"): node[part]}
            node[part] = child
        node = child
    current = node.get(last)
    if isinstance(current, dict) and not isinstance(value, dict) and last in _SHORTHAND_FIELD:
        current[_SHORTHAND_FIELD[last]] = value
    else:
        node[last] = value


_SHORTHAND_FIELD = {"method": "name", "loss": "name", "data": "source"}


def shipped_names(kind: str) -> list[str]:
    """The names of the recipes (``kind="recipes"``) or studies shipped inside the package."""
    folder = resources.files("layerprune") / kind
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def shipped_path(kind: str, name: str) -> Path:
    return Path(str(resources.files("layerprune") / kind / f"{name}.yaml"))


def resolve_shipped(source: str, kind: str) -> Path:
    """A path as given if it exists, else the shipped file of that name; else a did-you-mean error."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if source in shipped_names(kind):
        return shipped_path(kind, source)
    import difflib

    close = difflib.get_close_matches(source, shipped_names(kind), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UserError(f"no file {source} and no shipped {kind[:-1]} of that name{hint} (see `layerprune {kind}`)")


def summary_line(path: Path) -> str:
    """What a shipped file does: its second comment line (the first shows the command that runs it)."""
    comments = [line.lstrip("# ").rstrip() for line in path.read_text(encoding="utf-8").splitlines()[:2]]
    return comments[-1] if comments else ""
