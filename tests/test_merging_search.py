"""SLM, LaCo and target-mode window logic driven by stub similarity tables (no model)."""

import math

import pytest

from layerprune.errors import UserError
from layerprune.merging import (
    LacoConfig,
    LayerStack,
    SlmConfig,
    TargetConfig,
    laco_search,
    search_for_count,
    slm_search,
)


class StubScores:
    """Similarity of a candidate = table[(first, last)] of the span its last merge fused (0 if absent)."""

    def __init__(self, table: dict[tuple[int, int], float]) -> None:
        self.table = table
        self.asked: list[tuple[int, int]] = []

    def __call__(self, stack: LayerStack) -> float:
        span = (stack.steps[-1].first, stack.steps[-1].last)
        self.asked.append(span)
        return self.table.get(span, 0.0)


def spans(stack: LayerStack) -> list[tuple[int, int]]:
    return [(g.first, g.last) for g in stack.groups]


def test_slm_commits_largest_window_and_the_window_reaching_the_bottom() -> None:
    scores = StubScores({(5, 6): 0.9, (4, 6): 0.8, (3, 6): 0.3, (2, 3): 0.2, (1, 2): 0.7, (0, 2): 0.6})
    result = slm_search(LayerStack.initial(8), scores, 0.5, SlmConfig())
    assert spans(result) == [(0, 2), (3, 3), (4, 6), (7, 7)]  # [0–2] still passes at the bottom: committed
    assert scores.asked == [(5, 6), (4, 6), (3, 6), (2, 3), (1, 2), (0, 2)]
    assert [(s.first, s.last, s.similarity) for s in result.steps] == [(4, 6, 0.8), (0, 2, 0.6)]
    assert result.removed == 4


def test_slm_without_protecting_the_last_layer() -> None:
    table = {(6, 7): 0.9, (5, 7): 0.4, (4, 5): 0.1, (3, 4): 0.95, (2, 4): 0.9, (1, 4): 0.8, (0, 4): 0.1}
    result = slm_search(LayerStack.initial(8), StubScores(table), 0.5, SlmConfig(protect_last=False))
    assert spans(result) == [(0, 0), (1, 4), (5, 5), (6, 7)]


def test_slm_merges_nothing_when_no_window_passes() -> None:
    scores = StubScores({})
    result = slm_search(LayerStack.initial(5), scores, 0.5, SlmConfig())
    assert spans(result) == [(i, i) for i in range(5)]
    assert scores.asked == [(2, 3), (1, 2), (0, 1)]


def test_slm_threshold_is_inclusive() -> None:
    result = slm_search(LayerStack.initial(4), StubScores({(1, 2): 0.5}), 0.5, SlmConfig())
    assert spans(result) == [(0, 0), (1, 2), (3, 3)]


def test_laco_steps_interval_and_remerges_merged_layers() -> None:
    # C=3, I=2, L=1, H=9 on 10 layers; (5, 9) would re-merge the fused [7–9] and fails
    table = {(7, 9): 0.9, (5, 9): 0.3, (4, 6): 0.8, (2, 6): 0.2, (1, 3): 0.95}
    scores = StubScores(table)
    result = laco_search(LayerStack.initial(10), scores, 0.5, LacoConfig(merge_layers=3, interval=2, lowest=1))
    assert scores.asked == [(7, 9), (5, 9), (4, 6), (2, 6), (1, 3)]
    assert spans(result) == [(0, 0), (1, 3), (4, 6), (7, 9)]


def test_laco_remerge_accepted_and_range_respected() -> None:
    # I=1, H=8: after [6–8] the next group (current 5..6, clipped at H) contains the fused layer
    table = {(6, 8): 0.9, (5, 8): 0.9, (4, 8): 0.1, (3, 8): 0.1, (2, 4): 0.1}
    scores = StubScores(table)
    result = laco_search(
        LayerStack.initial(10), scores, 0.5, LacoConfig(merge_layers=3, interval=1, lowest=2, highest=8)
    )
    assert scores.asked == [(6, 8), (5, 8), (4, 8), (3, 8), (2, 4)]
    assert spans(result) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 8), (9, 9)]


def test_laco_rejects_bad_parameters() -> None:
    with pytest.raises(UserError, match="merge_layers"):
        laco_search(LayerStack.initial(6), StubScores({}), 0.5, LacoConfig(merge_layers=1))
    with pytest.raises(UserError, match="lowest"):
        laco_search(LayerStack.initial(6), StubScores({}), 0.5, LacoConfig(lowest=4, highest=2))


def _slm_at(table: dict, layers: int):
    scores = StubScores(table)
    return (lambda threshold: slm_search(LayerStack.initial(layers), scores, threshold, SlmConfig())), scores


@pytest.mark.parametrize(("target", "lowest", "highest"), [(1, 0.85, 0.9), (2, 0.5, 0.85), (3, 0.4, 0.5), (4, -1, 0.4)])
def test_target_mode_finds_a_threshold_removing_exactly_k(target: int, lowest: float, highest: float) -> None:
    search, _ = _slm_at({(3, 4): 0.9, (2, 4): 0.85, (1, 4): 0.5, (0, 4): 0.4}, 6)
    result = search_for_count(search, target, TargetConfig())
    assert result.exact and result.stack.removed == target
    assert lowest < result.threshold <= highest or (target == 4 and result.threshold <= highest)


def test_target_mode_reports_both_sides_when_k_is_skipped() -> None:
    search, _ = _slm_at({(3, 4): 0.9, (1, 2): 0.9}, 6)  # both windows pass or fail together: 0 or 2 removed
    result = search_for_count(search, 1, TargetConfig())
    assert not result.exact
    assert result.below[1] == 2 and result.above[1] == 0
    assert result.below[0] <= 0.9 < result.above[0] and math.isclose(result.below[0], 0.9, abs_tol=1e-6)
    assert "no threshold removes exactly 1" in result.describe(1)


def test_target_mode_reuses_memoised_scores_and_rejects_impossible_k() -> None:
    search, _ = _slm_at({(3, 4): 0.9}, 6)
    with pytest.raises(UserError, match="cannot remove 5"):
        search_for_count(search, 5, TargetConfig())
