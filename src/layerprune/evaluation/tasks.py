"""Named task suites of the layer-pruning papers and their averages, as each paper computes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean

from layerprune.registry import Registry


@dataclass(frozen=True)
class Suite:
    """A list of lm-eval tasks with the metric each contributes to the suite's average.

    The average is the unweighted mean over tasks of that metric (each group task such as
    ``mmlu`` contributes its own lm-eval aggregate, itself weighted by subtask size).
    """

    tasks: tuple[str, ...]
    reference: str
    metric: str = "acc"
    metric_overrides: dict[str, str] = field(default_factory=dict)

    def metric_for(self, task: str) -> str:
        return self.metric_overrides.get(task, self.metric)

    def average(self, task_results: dict[str, dict[str, float | None]]) -> SuiteAverage:
        """Mean of ``metric_for(task)`` over the tasks present; missing tasks are listed, not imputed."""
        present = [t for t in self.tasks if task_results.get(t, {}).get(self.metric_for(t)) is not None]
        values = [task_results[t][self.metric_for(t)] for t in present]
        return SuiteAverage(
            value=fmean(values) if values else None,
            tasks={t: self.metric_for(t) for t in present},
            missing=[t for t in self.tasks if t not in present],
        )


@dataclass
class SuiteAverage:
    """A suite's average, the metric used per task, and the tasks it lacks (average is then partial)."""

    value: float | None
    tasks: dict[str, str]
    missing: list[str]


SUITES: Registry[Suite] = Registry("task suite")

SUITES.add(
    "paper8",
    Suite(
        tasks=("mmlu", "cmmlu", "piqa", "openbookqa", "winogrande", "hellaswag", "arc_easy", "arc_challenge"),
        reference="Lu et al. 2024, Reassessing Layer Pruning in LLMs: New Insights and Methods (acc on 8 tasks)",
    ),
)

SUITES.add(
    "zeroshot7",
    Suite(
        tasks=("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"),
        reference="Kim et al. 2024, Shortened LLaMA; SLM/SLEB zero-shot tables (acc_norm for HellaSwag, ARC-c, OBQA)",
        metric_overrides={"hellaswag": "acc_norm", "arc_challenge": "acc_norm", "openbookqa": "acc_norm"},
    ),
)


def expand_tasks(names: list[str]) -> tuple[list[str], list[str]]:
    """Split task arguments into lm-eval task names (suites expanded, order kept, no duplicates) and suite names."""
    tasks: list[str] = []
    suites: list[str] = []
    for name in names:
        if name in SUITES:
            suites.append(name)
            tasks.extend(SUITES.get(name).tasks)
        else:
            tasks.append(name)
    return list(dict.fromkeys(tasks)), suites
