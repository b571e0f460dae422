"""Similarities on constructed hidden states; config validation; every registered name documented."""

import pytest
import torch

from layerprune.errors import UserError
from layerprune.merging import MERGE_METHODS, MERGE_OPERATORS, SIMILARITIES, MergeConfig
from layerprune.merging.streamline import BLOCK_METRICS, TRAINING_LOSSES


def _states(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(seed))


def test_cosine_is_the_mean_per_sample_cosine_of_flattened_states() -> None:
    ref, mask = _states(), torch.ones(2, 6, dtype=torch.long)
    cand = ref.clone()
    cand[1] = -cand[1]  # sample 0 identical (cos 1), sample 1 negated (cos −1)
    assert SIMILARITIES.get("cosine")([ref], [cand], [mask]) == pytest.approx(0.0, abs=1e-9)
    cand[1, 4:] = 100.0  # padding positions must not count
    mask[1, 4:] = 0
    cand[1, :4] = ref[1, :4]
    assert SIMILARITIES.get("cosine")([ref], [cand], [mask]) == pytest.approx(1.0, abs=1e-9)


def test_cka_is_invariant_to_rotation_and_scale_but_not_to_noise() -> None:
    ref, mask = _states(), torch.ones(2, 6, dtype=torch.long)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))
    cka = SIMILARITIES.get("cka")
    assert cka([ref], [3.0 * ref @ rotation + 2.0], [mask]) == pytest.approx(1.0, abs=1e-9)
    assert cka([ref], [_states(seed=5)], [mask]) < 0.9


def test_merge_config_validation() -> None:
    assert MergeConfig(ratio=0.25).validate(8) == 2
    assert MergeConfig(threshold=0.5).validate(8) is None
    for bad in (
        lambda: MergeConfig().validate(8),
        lambda: MergeConfig(threshold=0.5, num_layers=2).validate(8),
        lambda: MergeConfig(ratio=1.5),
        lambda: MergeConfig(num_layers=8).validate(8),
    ):
        with pytest.raises(UserError):
            bad()
    with pytest.raises(UserError, match="Did you mean 'laco'"):
        MergeConfig(method="loco", threshold=0.5)


@pytest.mark.parametrize(
    ("similarity", "threshold", "ok"),
    [
        ("cosine", -1.0, True),
        ("cosine", 1.5, False),
        ("cosine", -1.5, False),
        ("cka", 0.0, True),
        ("cka", -0.1, False),
        ("cka", 2.0, False),
    ],
)
def test_threshold_range_follows_the_similarity(similarity: str, threshold: float, ok: bool) -> None:
    """Cosine lies in [−1, 1] and linear CKA in [0, 1]; a threshold outside can never (or always) pass."""
    if ok:
        assert MergeConfig(threshold=threshold, similarity=similarity).threshold == threshold
    else:
        with pytest.raises(UserError, match=rf"threshold must be in .* for {similarity}"):
            MergeConfig(threshold=threshold, similarity=similarity)


@pytest.mark.parametrize("registry", [MERGE_OPERATORS, MERGE_METHODS, SIMILARITIES, BLOCK_METRICS, TRAINING_LOSSES])
def test_every_registered_name_is_documented(registry) -> None:
    assert len(registry) >= 2
    for name, entry in registry.items():
        assert len((entry.__doc__ or "").strip()) > 40, name
