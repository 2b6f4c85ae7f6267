"""The shared resampling helpers: draws, interval convention and p-values."""

from __future__ import annotations

import numpy as np
import pytest

from probes import stats
from probes.errors import ProbesError


def test_bootstrap_means_match_explicit_indices() -> None:
    values = np.random.default_rng(0).normal(size=(2, 3, 40))
    idx = stats.bootstrap_indices(40, 100, seed=3)
    np.testing.assert_array_equal(stats.bootstrap_means(values, 100, 3), values[..., idx].mean(-1))


def test_chunked_draws_bound_memory_and_keep_count() -> None:
    assert stats.chunk_sizes(10, 3, max_cells=9) == [3, 3, 3, 1]
    assert stats.chunk_sizes(0, 3) == []
    means = stats.bootstrap_means(np.arange(5.0), 7, 0, max_cells=10)
    assert means.shape == (7,)


def test_percentile_interval_ignores_non_finite_and_checks_level() -> None:
    samples = np.concatenate([np.linspace(0, 1, 101), [np.nan, np.inf]])
    low, high = stats.percentile_interval(samples, level=0.9)
    assert low == pytest.approx(0.05) and high == pytest.approx(0.95)
    assert np.isnan(stats.percentile_interval(np.array([np.nan]))[0])
    with pytest.raises(ProbesError, match="level"):
        stats.percentile_interval(samples, level=1.5)


def test_bootstrap_mean_interval_covers_the_mean() -> None:
    values = np.random.default_rng(1).normal(1.0, 1.0, size=200)
    mean, low, high = stats.bootstrap_mean_interval(values, 500, seed=0)
    assert low < mean < high and mean == pytest.approx(values.mean())
    with pytest.raises(ProbesError):
        stats.bootstrap_mean_interval([], 10)


def test_sign_flip_p_value() -> None:
    assert stats.sign_flip_p_value(np.full(30, 0.5), 999, 0) == pytest.approx(1 / 1000)
    assert stats.sign_flip_p_value(np.array([1.0, -1.0] * 10), 999, 0) == 1.0
    assert stats.permutation_p_value(0, 0) == 1.0
