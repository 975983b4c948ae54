"""Percentile-bootstrap confidence intervals over per-question scores (`DIR/scores.jsonl` of `qalign eval`).

Resampling: `numpy.random.default_rng(seed).integers(0, n, size=(samples, n))` gives the question indices of
every resample (row b = resample b). The interval is `numpy.percentile(resampled_means, [a, 100 - a])` with
numpy's default linear interpolation, a = (1 - level) / 2 * 100. The paired bootstrap resamples questions (the
same indices for both methods), so the interval of a difference accounts for questions being easy or hard for
both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qalign.errors import QalignError


@dataclass(frozen=True)
class Interval:
    """A mean (or a mean difference) with its bootstrap interval, and the number of questions behind it."""

    mean: float
    low: float
    high: float
    n: int

    def format(self, scale: float = 100.0, signed: bool = False) -> str:
        """`42.7 [37.0, 48.3]` (scaled to percent by default; `signed` writes `+1.3 [-0.4, 2.9]`)."""
        head = f"{self.mean * scale:+.1f}" if signed else f"{self.mean * scale:.1f}"
        return f"{head} [{self.low * scale:.1f}, {self.high * scale:.1f}]"


def resample_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """The (samples, n) matrix of question indices every interval here is computed from."""
    if n < 1:
        raise QalignError("bootstrap: no scores to resample (0 questions). Was the run evaluated?")
    if samples < 1:
        raise QalignError(f"bootstrap: samples must be >= 1, got {samples}.")
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def bootstrap_ci(values: Sequence[float], samples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """Mean of `values` with a percentile-bootstrap interval (see the module docstring for the exact recipe)."""
    data = np.asarray(values, dtype=float)
    means = data[resample_indices(len(data), samples, seed)].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(mean=float(data.mean()), low=float(low), high=float(high), n=len(data))


def paired_values(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    """Ids present in both (in `a`'s order) and the per-question differences a - b."""
    ids = [key for key in a if key in b]
    if not ids:
        raise QalignError("paired bootstrap: the two runs share no question ids; were they scored on the same set?")
    return ids, np.array([float(a[key]) - float(b[key]) for key in ids])


def paired_bootstrap(
    a: Mapping[str, float], b: Mapping[str, float], samples: int = 1000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Mean difference a - b over the questions both scored (joined by id), with its paired-bootstrap interval."""
    _, diffs = paired_values(a, b)
    return bootstrap_ci(diffs, samples=samples, seed=seed, level=level)


def scores_by_id(rows: Sequence[Mapping], metric: str) -> dict[str, float]:
    """{id: score} of one metric from `scores.jsonl` rows (see `qalign.evaluators.report.load_scores`)."""
    out: dict[str, float] = {}
    for index, row in enumerate(rows, start=1):
        if "id" not in row or metric not in row:
            raise QalignError(f"scores row {index} lacks `id` or `{metric}`; re-run `qalign eval` to rewrite it.")
        out[str(row["id"])] = float(row[metric])
    return out
