"""Bootstrap intervals: checked against a hand computation from the same resample indices."""

from __future__ import annotations

import numpy as np
import pytest

from qalign.errors import QalignError
from qalign.evaluators.bootstrap import (
    Interval,
    bootstrap_ci,
    paired_bootstrap,
    resample_indices,
    scores_by_id,
)


def _hand_percentile(sorted_values: list[float], q: float) -> float:
    """numpy's default (linear) percentile, written out: position q/100 * (B - 1), interpolated."""
    position = q / 100 * (len(sorted_values) - 1)
    below = int(position)
    above = min(below + 1, len(sorted_values) - 1)
    return sorted_values[below] + (position - below) * (sorted_values[above] - sorted_values[below])


def test_interval_matches_a_hand_computation() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.0]
    samples, seed = 6, 3
    # the resamples, as the module docstring documents them
    indices = np.random.default_rng(seed).integers(0, 5, size=(samples, 5)).tolist()
    assert resample_indices(5, samples, seed).tolist() == indices
    means = []
    for row in indices:  # mean of each resample, by hand
        total = 0.0
        for i in row:
            total += values[i]
        means.append(total / 5)
    means.sort()
    expected_low, expected_high = _hand_percentile(means, 2.5), _hand_percentile(means, 97.5)
    # with B = 6: low sits 1/8 of the way from the smallest to the second-smallest mean, high 7/8 past the 5th
    assert expected_low == pytest.approx(means[0] + 0.125 * (means[1] - means[0]))
    assert expected_high == pytest.approx(means[4] + 0.875 * (means[5] - means[4]))

    ci = bootstrap_ci(values, samples=samples, seed=seed)
    assert ci.mean == pytest.approx(0.6) and ci.n == 5
    assert (ci.low, ci.high) == (pytest.approx(expected_low), pytest.approx(expected_high))
    assert ci.low <= ci.high


def test_degenerate_vectors_have_zero_width_intervals() -> None:
    assert bootstrap_ci([1.0] * 7, samples=50, seed=1) == Interval(1.0, 1.0, 1.0, 7)
    assert bootstrap_ci([0, 0, 0], samples=50, seed=1) == Interval(0.0, 0.0, 0.0, 3)
    with pytest.raises(QalignError, match="0 questions"):
        bootstrap_ci([], samples=10)


def test_same_seed_same_interval_and_level() -> None:
    values = np.random.default_rng(0).random(40).tolist()
    assert bootstrap_ci(values, 300, 5) == bootstrap_ci(values, 300, 5)
    wide, narrow = bootstrap_ci(values, 300, 5, level=0.99), bootstrap_ci(values, 300, 5, level=0.5)
    assert wide.low <= narrow.low <= narrow.high <= wide.high


def test_paired_bootstrap_joins_by_id() -> None:
    a = {"q1": 1.0, "q2": 0.0, "q3": 1.0, "q4": 1.0, "extra": 1.0}
    b = {"q4": 0.0, "q3": 1.0, "q2": 0.0, "q1": 0.0}  # other order, no "extra"
    diff = paired_bootstrap(a, b, samples=40, seed=2)
    # differences in a's order: q1 1, q2 0, q3 0, q4 1 -> resampled with the same indices as bootstrap_ci
    assert diff == bootstrap_ci([1.0, 0.0, 0.0, 1.0], samples=40, seed=2)
    assert diff.mean == pytest.approx(0.5) and diff.n == 4
    assert paired_bootstrap(a, a, samples=40) == Interval(0.0, 0.0, 0.0, 5)
    with pytest.raises(QalignError, match="share no question ids"):
        paired_bootstrap({"x": 1.0}, {"y": 1.0})


def test_format_and_scores_by_id() -> None:
    assert Interval(0.4267, 0.37, 0.4833, 300).format() == "42.7 [37.0, 48.3]"
    assert Interval(0.013, -0.004, 0.029, 300).format(signed=True) == "+1.3 [-0.4, 2.9]"
    rows = [{"id": "a", "subem": 1.0, "f1": 0.5}, {"id": 7, "subem": 0.0, "f1": 0.0}]
    assert scores_by_id(rows, "f1") == {"a": 0.5, "7": 0.0}
    with pytest.raises(QalignError, match="lacks `id` or `em`"):
        scores_by_id(rows, "em")
