"""Resampling statistics shared by probing, mediation and the audit (pure numpy).

One convention throughout: an interval is named by its coverage ``level`` (e.g. 0.95), never by
``alpha``, and is the central percentile interval of bootstrap samples. Every random function
takes its seed as an argument and builds its own ``np.random.default_rng(seed)``; nothing
touches a global random state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Float, Int

from probes.errors import ProbesError
from probes.validate import check_int

MAX_CELLS = 4_000_000  # default bound on array cells per vectorised resampling chunk


def as_vector(
    values: Sequence[float] | np.ndarray,
    message: str = "values must be a non-empty 1-d array",
) -> Float[np.ndarray, " n"]:
    """``values`` as a non-empty 1-d float array; ``ProbesError(message)`` otherwise."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) == 0:
        raise ProbesError(message)
    return array


def chunk_sizes(total: int, cells_per_draw: int, max_cells: int = MAX_CELLS) -> list[int]:
    """Split ``total`` draws into chunks of at most ``max_cells`` array cells each."""
    step = max(1, max_cells // max(1, cells_per_draw))
    return [min(step, total - start) for start in range(0, total, step)]


def bootstrap_indices(n: int, n_boot: int, seed: int) -> Int[np.ndarray, "n_boot n"]:
    """``[n_boot, n]`` resampling indices; share them to keep statistics of one sample paired."""
    check_int("n_boot (the number of resamples)", n_boot)
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_means(
    values: Float[np.ndarray, "... n"],
    n_boot: int,
    seed: int,
    *,
    max_cells: int | None = None,
) -> Float[np.ndarray, "... n_boot"]:
    """Means over the last axis of ``n_boot`` resamples of it (the same draws for every row).

    With ``max_cells`` the indices are drawn chunk by chunk from one generator, bounding memory
    (the draws then differ from one ``bootstrap_indices`` call when there is more than one chunk).
    """
    values = np.asarray(values)
    n = values.shape[-1]
    if max_cells is None:
        return values[..., bootstrap_indices(n, n_boot, seed)].mean(axis=-1)
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            values[..., rng.integers(0, n, (b, n))].mean(axis=-1)
            for b in chunk_sizes(n_boot, values.size, max_cells)
        ],
        axis=-1,
    )


def cluster_bootstrap_means(
    values: Float[np.ndarray, "... n"],
    clusters: Sequence[Any] | np.ndarray,
    n_boot: int,
    seed: int,
) -> Float[np.ndarray, "... n_boot"]:
    """Means over the last axis when whole clusters (e.g. template families) are resampled.

    Each draw takes as many clusters as there are, with replacement, and pools their rows, so
    rows of one family stay together and the interval reflects how many families there are.
    """
    values = np.asarray(values, dtype=float)
    if len(clusters) != values.shape[-1]:
        raise ProbesError("one cluster per value is needed for a cluster bootstrap")
    _, ids = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    n_clusters = int(ids.max()) + 1
    sums = np.zeros((*values.shape[:-1], n_clusters))
    for c in range(n_clusters):
        sums[..., c] = values[..., ids == c].sum(axis=-1)
    counts = np.bincount(ids, minlength=n_clusters).astype(float)
    draws = np.random.default_rng(seed).integers(0, n_clusters, size=(n_boot, n_clusters))
    return sums[..., draws].sum(axis=-1) / counts[draws].sum(axis=-1)


def pearson(x: Float[np.ndarray, " n"], y: Float[np.ndarray, " n"]) -> float:
    """Pearson's r (NaN when either side is constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else math.nan


def spearman(x: Float[np.ndarray, " n"], y: Float[np.ndarray, " n"]) -> float:
    """Spearman's rho: Pearson's r of the ranks (ties get their mean rank)."""
    from scipy.stats import rankdata

    return pearson(rankdata(x), rankdata(y))


def correlation_interval(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    clusters: Sequence[Any] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Pearson's r of paired values and a cluster-bootstrap interval (whole clusters resampled,
    e.g. both twins of a pair together)."""
    x, y = as_vector(x), as_vector(y)
    if len(x) != len(y) or len(clusters) != len(x):
        raise ProbesError("a correlation needs x, y and clusters of one length")
    _, ids = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    members = [np.flatnonzero(ids == c) for c in range(int(ids.max()) + 1)]
    rng = np.random.default_rng(seed)
    samples = np.empty(n_boot)
    for b in range(n_boot):
        rows = np.concatenate([members[c] for c in rng.integers(0, len(members), len(members))])
        samples[b] = pearson(x[rows], y[rows])
    low, high = percentile_interval(samples, level)
    return pearson(x, y), low, high


def _tails(level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ProbesError("level must be between 0 and 1")
    tail = (1 - level) / 2
    return tail, 1 - tail


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of all ``samples`` (non-finite ones ignored)."""
    low_q, high_q = _tails(level)
    finite = np.asarray(samples)[np.isfinite(samples)]
    if len(finite) == 0:
        return math.nan, math.nan
    low, high = np.quantile(finite, [low_q, high_q])
    return float(low), float(high)


def percentile_bounds(samples: Float[np.ndarray, "... b"], level: float = 0.95) -> tuple[Any, Any]:
    """Row-wise central ``level`` percentile interval over the last axis (NaNs propagate); a
    scalar pair for one row."""
    low_q, high_q = _tails(level)
    return np.quantile(samples, low_q, axis=-1), np.quantile(samples, high_q, axis=-1)


def bootstrap_mean_interval(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    *,
    max_cells: int | None = MAX_CELLS,
) -> tuple[float, float, float]:
    """The mean of 1-d ``values`` and its ``level`` percentile-bootstrap interval."""
    values = as_vector(values)
    if n_boot < 1:
        raise ProbesError("the number of resamples must be at least 1")
    boot = bootstrap_means(values, n_boot, seed, max_cells=max_cells)
    low, high = percentile_bounds(boot, level)
    return float(values.mean()), float(low), float(high)


def permutation_p_value(hits: int, n_perm: int) -> float:
    """``(1 + hits) / (1 + n_perm)``: a permutation p-value that is never 0."""
    return (1 + hits) / (1 + n_perm)


def sign_flip_p_value(
    values: Sequence[float] | np.ndarray, n_perm: int = 10_000, seed: int = 0
) -> float:
    """Two-sided sign-flip permutation p-value of the mean of paired differences being zero.

    Under the null each pair's difference is symmetric about zero, so its sign is exchangeable:
    ``p = (1 + #{|mean of sign-flipped values| >= |observed mean|}) / (1 + n_perm)``.
    """
    values = as_vector(values, "effects must be a non-empty 1-d array (one value per twin pair)")
    rng = np.random.default_rng(seed)
    observed = abs(values.mean())
    hits = 0
    for size in chunk_sizes(n_perm, len(values), 2_000_000):  # bound memory for many pairs
        signs = rng.integers(0, 2, size=(size, len(values))) * 2 - 1
        null = np.abs((signs * values).mean(axis=1))
        hits += int((null >= observed - 1e-12 * max(1.0, observed)).sum())
    return permutation_p_value(hits, n_perm)


__all__ = [
    "MAX_CELLS",
    "as_vector",
    "bootstrap_indices",
    "bootstrap_mean_interval",
    "bootstrap_means",
    "chunk_sizes",
    "cluster_bootstrap_means",
    "correlation_interval",
    "pearson",
    "percentile_bounds",
    "percentile_interval",
    "permutation_p_value",
    "sign_flip_p_value",
    "spearman",
]
