"""DSA: discovering a sparsity-allocation function by evolutionary search (Li et al., NeurIPS 2024).

An allocation function maps each layer's element scores to a layer score, composed from a
search space of operations:

* element scores: Wanda's ``|W_ij|·‖X_j‖`` or the magnitude ``|W_ij|`` of all the layer's
  linear weights;
* a pre-process op on the elements (identity, square, sqrt, log1p, standardisation);
* a reduction to one number per layer (mean, median, std, max, 0.9-quantile, outlier
  ratio above 5× the mean), of all the layer's element scores pooled into one vector as the
  released code does (``dsa_scores: pooled``), or per matrix and then averaged
  (``dsa_scores: per-matrix``, a layerprune variant);
* a transform of the layer numbers (identity, log, exp of the standardised value, square,
  reciprocal) and a sign (does a higher value mean prune more or less);
* the spread ``λ``.

Layer scores are min-max normalised and mapped to ``S_l = S + 2λ(ŝ_l − mean ŝ)``, so the mean
is the target ``S``. The search keeps a population, breeds children by uniform crossover and
per-gene mutation, and ranks by the calibration perplexity of the model pruned with that
allocation (lower is better). Its state (every evaluated function with its fitness, the
population, the generation) is written after each evaluation, so a killed search resumes
where it stopped; the best function is saved under a name and reused with
``dsa_function=NAME`` without searching again.

The paper's search space has more operations (and searches on LLaMA-1 with a zero-shot
fitness); this one keeps the structure — element scores → pre-process → reduction →
transform → normalised spread — at a size a CPU search can cover.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import torch

from layerprune.errors import UserError
from layerprune.records import read_json_object
from layerprune.width.sparse import ALLOCATIONS, AllocationContext, spread

PRE = ("identity", "square", "sqrt", "log1p", "standardise")
REDUCE = ("mean", "median", "std", "max", "q90", "outliers")
TRANSFORM = ("identity", "log", "exp", "square", "reciprocal")
ELEMENTS = ("wanda", "magnitude")
LAMBDAS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15)
_SAMPLE = 1 << 16  # elements per matrix used by the median/quantile reductions (fixed-stride subsample)


@dataclass(frozen=True)
class AllocationFunction:
    """One point of the search space (see the module docstring)."""

    elements: str = "wanda"
    pre: str = "identity"
    reduce: str = "outliers"
    transform: str = "identity"
    sign: int = -1
    lam: float = 0.08

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _pre(values: torch.Tensor, op: str) -> torch.Tensor:
    if op == "square":
        return values.pow(2)
    if op == "sqrt":
        return values.sqrt()
    if op == "log1p":
        return values.log1p()
    if op == "standardise":
        return (values - values.mean()) / values.std().clamp_min(1e-12)
    return values


def _reduce(values: torch.Tensor, op: str) -> float:
    if op in ("median", "q90"):
        values = values.flatten()[:: max(values.numel() // _SAMPLE, 1)]
        return float(values.median() if op == "median" else values.quantile(0.9))
    if op == "outliers":
        return float((values > 5 * values.mean()).double().mean())
    return float({"mean": values.mean, "std": values.std, "max": values.max}[op]())


def _transform(values: list[float], op: str) -> list[float]:
    if op == "log":
        return [math.log(max(v, 1e-12)) for v in values]
    if op == "exp":
        mean, std = sum(values) / len(values), (torch.tensor(values).std().item() or 1.0)
        return [math.exp(max(min((v - mean) / std, 20.0), -20.0)) for v in values]
    if op == "square":
        return [v * v for v in values]
    if op == "reciprocal":
        return [1 / v if abs(v) > 1e-12 else 1e12 for v in values]
    return list(values)


def layer_scores(function: AllocationFunction, context: AllocationContext) -> list[float]:
    """One score per layer, from the layer's element scores, by ``dsa_scores``.

    ``pooled`` (DSA's code, ``lliai/DSA`` ``lib/prune_all.py`` lines 2060 and 2069: every
    matrix's element scores concatenated into one vector, the function applied once):
    ``reduce(pre(concat))``. ``per-matrix`` (a layerprune variant): the mean over the layer's
    matrices of ``reduce(pre(elements))``, so every projection weighs the same.
    """
    scores = []
    for index, layer in enumerate(context.weights):
        if function.elements == "wanda":
            elements = context.element_scores(index)
        else:
            elements = [w.abs().to(torch.float64) for w in layer.values()]
        if context.config.dsa_scores == "pooled":
            elements = [torch.cat([e.flatten() for e in elements])]
        scores.append(sum(_reduce(_pre(e, function.pre), function.reduce) for e in elements) / len(elements))
    return _transform(scores, function.transform)


def allocate_with(function: AllocationFunction, context: AllocationContext) -> list[float]:
    """``S_l = S + 2λ(ŝ_l − mean ŝ)`` over the function's (signed) layer scores."""
    scores = [function.sign * s for s in layer_scores(function, context)]
    return spread(scores, context.target, function.lam)


def random_function(rng: random.Random) -> AllocationFunction:
    return AllocationFunction(
        rng.choice(ELEMENTS),
        rng.choice(PRE),
        rng.choice(REDUCE),
        rng.choice(TRANSFORM),
        rng.choice((-1, 1)),
        rng.choice(LAMBDAS),
    )


def crossover(a: AllocationFunction, b: AllocationFunction, rng: random.Random) -> AllocationFunction:
    return AllocationFunction(**{f.name: getattr(rng.choice((a, b)), f.name) for f in fields(a)})


def mutate(function: AllocationFunction, rng: random.Random, rate: float = 0.3) -> AllocationFunction:
    fresh = random_function(rng)
    return AllocationFunction(
        **{f.name: getattr(fresh if rng.random() < rate else function, f.name) for f in fields(function)}
    )


@dataclass
class SearchState:
    """Everything a resumed search needs: evaluated fitness by function key, population, generation."""

    fitness: dict[str, float]
    population: list[str]
    generation: int = 0

    @classmethod
    def load(cls, path: Path) -> SearchState | None:
        return _from_file(cls, path, "a DSA search state") if path.is_file() else None

    def save(self, path: Path) -> None:
        from layerprune.saving import write_json

        write_json(path, asdict(self))


def evolve(context: AllocationContext, state_path: Path) -> AllocationFunction:
    """Run (or resume) the search for ``context.config.dsa_generations`` generations; return the best function."""
    config = context.config
    state = SearchState.load(state_path) or SearchState({}, [], 0)
    if not state.population:
        rng = random.Random(config.dsa_seed)
        seeds = [AllocationFunction()] + [random_function(rng) for _ in range(config.dsa_population - 1)]
        state.population = [f.key() for f in seeds]
    for key in state.population:
        _fitness(key, context, state, state_path)
    while state.generation < config.dsa_generations:
        rng = random.Random(f"{config.dsa_seed}-{state.generation}")
        ranked = sorted(state.population, key=state.fitness.__getitem__)
        parents = [_decode(k) for k in ranked[: max(2, len(ranked) // 2)]]
        children = [mutate(crossover(*rng.sample(parents, 2), rng), rng).key() for _ in range(len(ranked))]
        for key in children:
            _fitness(key, context, state, state_path)
        state.population = sorted(set(ranked + children), key=state.fitness.__getitem__)[: config.dsa_population]
        state.generation += 1
        state.save(state_path)
    return _decode(min(state.fitness, key=state.fitness.__getitem__))


def _fitness(key: str, context: AllocationContext, state: SearchState, path: Path) -> float:
    if key not in state.fitness:
        sparsities = allocate_with(_decode(key), context)
        valid = all(0 <= s < 1 for s in sparsities)
        state.fitness[key] = context.evaluate(sparsities) if valid else math.inf
        state.save(path)
    return state.fitness[key]


def _decode(key: str) -> AllocationFunction:
    return AllocationFunction(**json.loads(key))


def function_path(name_or_path: str) -> Path:
    """A saved function: a ``.json`` path as given, else ``<cache>/dsa/functions/<name>.json``."""
    if name_or_path.endswith(".json"):
        return Path(name_or_path)
    from layerprune.models.loading import cache_root

    return cache_root() / "dsa" / "functions" / f"{name_or_path}.json"


def save_function(function: AllocationFunction, name_or_path: str) -> Path:
    from layerprune.saving import write_json

    path = function_path(name_or_path)
    write_json(path, asdict(function))
    return path


def load_function(name_or_path: str) -> AllocationFunction | None:
    path = function_path(name_or_path)
    if not path.is_file():
        return None
    return _from_file(AllocationFunction, path, "a saved DSA allocation function")


def _from_file(kind: type, path: Path, what: str):
    """A ``kind`` dataclass from the JSON object in ``path``; a malformed file is a :class:`UserError`."""
    data = read_json_object(path, what, tuple(f.name for f in fields(kind) if f.default is MISSING))
    try:
        return kind(**data)
    except TypeError as error:
        raise UserError(f"{path}: not {what} ({error})") from None


@ALLOCATIONS.register("dsa")
def dsa(context: AllocationContext) -> list[float]:
    """The allocation function ``dsa_function`` names (searched for first if it does not exist yet).

    The search state lives in ``dsa_state`` (default: next to the saved function), so
    running the same command again after a kill resumes the search.
    """
    config = context.config
    function = load_function(config.dsa_function)
    if function is None:
        state = (
            Path(config.dsa_state)
            if config.dsa_state
            else function_path(config.dsa_function).with_suffix(".search.json")
        )
        function = evolve(context, state)
        save_function(function, config.dsa_function)
    context.found_function = asdict(function)
    return allocate_with(function, context)
