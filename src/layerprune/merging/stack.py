"""A layer stack during a merge search: which input layers each current layer stands for.

The search never edits the model. It keeps an immutable :class:`LayerStack`: one
:class:`Group` per current layer, naming the span of the *input model's* layers it
replaces and, where it is merged, the fused module. :func:`apply_stack` hands the final
stack to the foundation surgery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import nn
from transformers import PreTrainedModel

from layerprune.execution import Bypass
from layerprune.merging.operators import MergeOperator, merge_layers
from layerprune.models import decoder_layers
from layerprune.provenance import get_provenance, record_step
from layerprune.surgery import replace_layers


@dataclass(frozen=True)
class Group:
    """Input layers ``first … last`` now computed by one layer (``module`` None: layer ``first`` itself)."""

    first: int
    last: int
    module: nn.Module | None = None


@dataclass(frozen=True)
class MergeStep:
    """One committed merge: input layers ``first … last`` fused, with the similarity it kept."""

    first: int
    last: int
    similarity: float


@dataclass(frozen=True)
class LayerStack:
    """The current layers as groups of input layers, plus the merge steps that produced them.

    ``layers``/``operator`` are None in model-free searches (stub similarities in tests);
    then no modules are built.
    """

    groups: tuple[Group, ...]
    steps: tuple[MergeStep, ...] = ()
    layers: tuple[nn.Module, ...] | None = None
    operator: str | MergeOperator | None = None

    @classmethod
    def initial(cls, layers: Sequence[nn.Module] | int, operator: str | MergeOperator | None = None) -> LayerStack:
        count = layers if isinstance(layers, int) else len(layers)
        modules = None if isinstance(layers, int) else tuple(layers)
        return cls(groups=tuple(Group(i, i) for i in range(count)), layers=modules, operator=operator)

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def removed(self) -> int:
        """How many input layers the stack has merged away."""
        return self.source_count - len(self)

    @property
    def source_count(self) -> int:
        return self.groups[-1].last + 1

    def merge(self, low: int, high: int) -> LayerStack:
        """The stack with current layers ``low … high`` fused into one (base: current layer ``low``)."""
        span = self.groups[low : high + 1]
        module = None
        if self.layers is not None and self.operator is not None:
            module = merge_layers([self.module_of(group) for group in span], self.operator)
        fused = Group(span[0].first, span[-1].last, module)
        step = MergeStep(fused.first, fused.last, float("nan"))
        return replace(self, groups=(*self.groups[:low], fused, *self.groups[high + 1 :]), steps=(*self.steps, step))

    def scored(self, similarity: float) -> LayerStack:
        """This stack with ``similarity`` recorded for its last merge step."""
        return replace(self, steps=(*self.steps[:-1], replace(self.steps[-1], similarity=similarity)))

    def current_index(self, source: int) -> int:
        """Current index of the layer that computes input layer ``source``."""
        return next(i for i, g in enumerate(self.groups) if g.first <= source <= g.last)

    def module_of(self, group: Group) -> nn.Module:
        return group.module if group.module is not None else self.layers[group.first]

    def key(self) -> tuple[tuple[int, int], ...]:
        """Identifies the stack by its merge history (cache key for similarities)."""
        return tuple((step.first, step.last) for step in self.steps)

    def substitutes(self) -> dict[int, nn.Module]:
        """Modules to put in place of the input model's layers so that it computes this stack."""
        result: dict[int, nn.Module] = {}
        for group in self.groups:
            if group.first == group.last:
                continue
            result[group.first] = self.module_of(group)
            result.update({index: Bypass() for index in range(group.first + 1, group.last + 1)})
        return result

    def first_changed(self) -> int:
        """Lowest input layer whose computation differs from the input model (its count if none)."""
        return min((g.first for g in self.groups if g.first != g.last), default=self.source_count)


def format_groups(stack: LayerStack) -> list[str]:
    """``["[18–21] → 18", …]`` for the merged groups, in current numbering of the result."""
    return [f"[{g.first}–{g.last}] → {index}" for index, g in enumerate(stack.groups) if g.first != g.last]


def apply_stack(model: PreTrainedModel, stack: LayerStack, **details) -> PreTrainedModel:
    """Install the stack's layers in ``model`` through the foundation surgery and record the merge."""
    layer_map = get_provenance(model).layer_map
    groups = [[layer_map[g.first], layer_map[g.last]] for g in stack.groups if g.first != g.last]
    steps = [{"layers": [layer_map[s.first], layer_map[s.last]], "similarity": s.similarity} for s in stack.steps]
    layers = decoder_layers(model)
    new_layers = [layers[g.first] if g.module is None else g.module for g in stack.groups]
    replace_layers(model, new_layers, [g.first for g in stack.groups])
    record_step(model, "merge", merged_source_groups=groups, steps=steps, **details)
    return model


def fixed_stack(layers: nn.ModuleList, groups: Sequence[tuple[int, int]], operator: str) -> LayerStack:
    """The stack with each run ``(first, last)`` of input layers fused into one (fixed groups, no search)."""
    stack, offset = LayerStack.initial(layers, operator), 0
    for first, last in sorted(groups):
        stack = stack.merge(first - offset, last - offset)
        offset += last - first
    return stack
