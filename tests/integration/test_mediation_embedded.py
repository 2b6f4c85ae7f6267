"""Mediation on the embedded Gemma 3 270M: the last token's residual after the final block carries
the whole dialect effect on the answer (NIE = TE, NDE = 0); after block 0 it carries almost none."""

from __future__ import annotations

import numpy as np
import pytest

from probes.datasets import load_behavior_items
from probes.mediation.estimator import answer_log_odds, mediate, twin_pairs

pytestmark = pytest.mark.integration


def test_last_token_residual_mediates_dialect_effect_only_at_the_top(gemma):
    twins = twin_pairs(load_behavior_items("dialect"), "us", "uk")[:8]
    first, last = 0, gemma.n_layers - 1
    results = {
        r.layer: r
        for r in mediate(gemma, twins, answer_log_odds, [first, last], n_boot=500, n_perm=2000)
    }
    top, bottom = results[last], results[first]
    te = top.per_twin["te"]
    assert (te > 0).all() and top.te.mean > 1.0  # UK cues raise the UK answers on every pair
    np.testing.assert_allclose(top.per_twin["nie"], te, atol=1e-3)
    np.testing.assert_allclose(top.per_twin["nde"], 0.0, atol=1e-3)
    assert top.proportion_mediated == pytest.approx(1.0, abs=1e-3)
    assert abs(bottom.nie.mean) < 0.05 * bottom.te.mean
    assert bottom.nde.mean == pytest.approx(bottom.te.mean, rel=0.05)
