"""Cluster bootstrap and the correlation interval in probes.stats."""

from __future__ import annotations

import numpy as np
import pytest

from probes import stats
from probes.errors import ProbesError


def test_cluster_bootstrap_is_wider_when_rows_of_a_family_agree() -> None:
    rng = np.random.default_rng(0)
    family_hit = rng.integers(0, 2, 12).astype(float)
    values = np.repeat(family_hit, 10)  # 12 families of 10 identical rows
    clusters = np.repeat(np.arange(12), 10)
    by_family = stats.cluster_bootstrap_means(values, clusters, 2000, seed=1)
    by_row = stats.bootstrap_means(values, 2000, seed=1)
    assert by_family.std() > 2 * by_row.std()
    assert by_family.mean() == pytest.approx(values.mean(), abs=0.03)


def test_cluster_bootstrap_rows_per_layer_and_singletons() -> None:
    values = np.stack([np.ones(30), np.zeros(30)])
    out = stats.cluster_bootstrap_means(values, [str(i) for i in range(30)], 50, seed=0)
    assert out.shape == (2, 50) and (out[0] == 1).all() and (out[1] == 0).all()
    with pytest.raises(ProbesError, match="one cluster per value"):
        stats.cluster_bootstrap_means(np.ones(3), [0, 1], 10, seed=0)


def test_correlation_interval_covers_the_truth() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    y = 0.8 * x + 0.6 * rng.normal(size=200)
    r, low, high = stats.correlation_interval(x, y, np.arange(200) // 2, n_boot=500, seed=0)
    assert low < 0.8 < high and low < r < high
    assert stats.pearson(x, -x) == pytest.approx(-1.0)
    assert stats.spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert np.isnan(stats.pearson(x, np.ones(200)))
