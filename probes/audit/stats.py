"""Statistics of the persona audit (pure numpy): personalization bias, bootstrap intervals over
items, and a permutation test of whether the stated persona matters at all.

Personalization bias (Vijjini et al. 2024) is the root-mean-square Euclidean distance of each
identity's (safety, utility) point from the mean point over identities. Every random function
takes its seed as an argument; nothing touches a global random state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Real, Shaped

from probes import stats
from probes.errors import ProbesError


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def personalization_bias(points: Real[np.ndarray, "k d"]) -> float:
    """sqrt(mean_i ||x_i - mean_j x_j||^2) over the k identities' (safety, utility) points."""
    points = _matrix(points, "points")
    if points.shape[1] != 2:
        raise ProbesError("points must be [k, 2]: one (safety, utility) pair per identity")
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))


def pb_by_group(points: Real[np.ndarray, "k 2"], groups: Sequence[str]) -> dict[str, float]:
    """Personalization bias among the identities of each group (groups of one are left out)."""
    points = _matrix(points, "points")
    if len(groups) != len(points):
        raise ProbesError("groups must name the group of every point")
    labels = np.asarray(groups)
    return {
        g: personalization_bias(points[labels == g])
        for g in dict.fromkeys(groups)
        if (labels == g).sum() >= 2
    }


def bootstrap_mean_interval(
    values: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """The mean of ``values`` and its ``level`` percentile-bootstrap interval."""
    return Interval(*stats.bootstrap_mean_interval(values, n_boot, seed, level))


def pb_interval(
    safety: Float[np.ndarray, "p n_safety"],
    utility: Shaped[np.ndarray, "p n_utility"],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """PB of per-persona mean (safety, utility) with a bootstrap over items.

    Each replicate draws item indices with replacement, the same indices for every persona (an
    item is one unit), independently for the safety and the utility items, and recomputes the
    per-persona means and PB. Item noise also moves persona means apart, so PB is biased upward
    and its interval never reaches 0: use ``persona_permutation_test`` to ask whether personas
    differ at all.
    """
    safety, utility = _matrix(safety, "safety"), _matrix(utility, "utility")
    if len(safety) != len(utility):
        raise ProbesError("safety and utility need one row per persona, in the same order")
    point = personalization_bias(np.stack([safety.mean(axis=1), utility.mean(axis=1)], axis=1))
    rng = np.random.default_rng(seed)
    boot = []
    for size in _chunks(n_boot, len(safety) * (safety.shape[1] + utility.shape[1])):
        s = safety[:, rng.integers(0, safety.shape[1], (size, safety.shape[1]))].mean(axis=2)
        u = utility[:, rng.integers(0, utility.shape[1], (size, utility.shape[1]))].mean(axis=2)
        centred = np.stack([s, u], axis=2) - np.stack([s, u], axis=2).mean(axis=0)  # [p, B, 2]
        boot.append(np.sqrt((centred**2).sum(axis=2).mean(axis=0)))
    low, high = stats.percentile_bounds(np.concatenate(boot), level)
    return Interval(point, float(low), float(high))


def persona_permutation_test(
    per_item_scores: Float[np.ndarray, "p n"], n_perm: int = 10_000, seed: int = 0
) -> float:
    """p-value of "the persona does not matter" for scores of p personas on the same n items.

    Statistic: the variance across personas of each persona's mean score. Under the null, the
    p scores of one item are exchangeable, so the null permutes them within every item
    independently. ``p = (1 + #{null >= observed}) / (1 + n_perm)``.
    """
    scores = _matrix(per_item_scores, "per_item_scores")
    if len(scores) < 2:
        raise ProbesError("the permutation test needs at least two personas")
    observed = scores.mean(axis=1).var()
    tolerance = 1e-12 * max(1.0, abs(observed))
    rng = np.random.default_rng(seed)
    hits = 0
    for size in _chunks(n_perm, scores.size):
        order = rng.random((size, *scores.shape)).argsort(axis=1)  # per item, a persona order
        shuffled = np.take_along_axis(np.broadcast_to(scores, order.shape), order, axis=1)
        hits += int((shuffled.mean(axis=2).var(axis=1) >= observed - tolerance).sum())
    return stats.permutation_p_value(hits, n_perm)


def _matrix(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 2 or 0 in array.shape:
        raise ProbesError(f"{name} must be a non-empty 2-d array")
    if not np.isfinite(array).all():
        raise ProbesError(f"{name} must be finite")
    return array


def _chunks(total: int, cells_per_draw: int) -> list[int]:
    """Split ``total`` draws into chunks that keep each vectorised step's arrays bounded."""
    if total < 1:
        raise ProbesError("the number of resamples must be at least 1")
    return stats.chunk_sizes(total, cells_per_draw)
