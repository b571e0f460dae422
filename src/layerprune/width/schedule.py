"""Per-layer pruning ratios: uniform, or SlimGPT's Incremental Pruning Ratio (log-increase).

Incremental Pruning Ratio (SlimGPT, Ling et al. 2024, §3.3): layer ``i`` of ``L`` gets

    r_i = r_0 + (r_max − r_0) · ln(i + 1) / ln(L)

so the first layer gets ``r_0`` and the last ``r_max``. The released code divides by
``ln 32`` (LLaMA-7B's depth) for every model; here ``L`` is the model's own layer count.
Its mean is ``r_0 + (r_max − r_0) · w`` with ``w = mean_i ln(i+1)/ln(L)``, so a target mean
``R`` fixes one bound given the other: :func:`solve_log_increase`.
"""

from __future__ import annotations

import math

from layerprune.errors import UserError


def log_increase(num_layers: int, r0: float, r_max: float) -> list[float]:
    """``r_i = r0 + (r_max − r0) · ln(i+1)/ln(L)`` for ``i = 0 … L−1``."""
    if num_layers == 1:
        return [r_max]
    return [r0 + (r_max - r0) * math.log(i + 1) / math.log(num_layers) for i in range(num_layers)]


def mean_weight(num_layers: int) -> float:
    """``w = mean_i ln(i+1)/ln(L)``, the weight of ``r_max − r_0`` in the schedule's mean."""
    return sum(log_increase(num_layers, 0.0, 1.0)) / num_layers


def solve_log_increase(num_layers: int, target: float, r0: float | None, r_max: float | None) -> tuple[float, float]:
    """``(r0, r_max)`` whose schedule has mean ``target``; the bound not given is solved for.

    With neither given, ``r0 = target / 2``. ``r0 = R − (r_max − r0)·w`` gives the other.
    """
    w = mean_weight(num_layers)
    if r0 is None and r_max is None:
        r0 = target / 2
    if r_max is None:
        r_max = r0 + (target - r0) / w
    elif r0 is None:
        r0 = (target - r_max * w) / (1 - w)
    if not (0 <= r0 < 1 and 0 < r_max < 1):
        raise UserError(
            f"a log-increase schedule with mean ratio {target} needs ratios from {r0:.3f} to {r_max:.3f}, "
            "outside [0, 1); choose other --min-ratio/--max-ratio"
        )
    return r0, r_max


def layer_ratios(num_layers: int, schedule: str, ratio: float, r0: float | None, r_max: float | None) -> list[float]:
    """Per-layer ratios: ``uniform`` (all ``ratio``) or ``log-increase`` with mean ``ratio``.

    ``log-increase`` with both bounds given uses them as they are (``ratio`` is then unused).
    """
    if schedule == "uniform":
        return [ratio] * num_layers
    if r0 is not None and r_max is not None:
        return log_increase(num_layers, r0, r_max)
    return log_increase(num_layers, *solve_log_increase(num_layers, ratio, r0, r_max))
