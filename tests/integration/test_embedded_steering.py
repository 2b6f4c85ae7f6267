"""On the embedded model, a dialect direction fitted on the probe dataset steers held-out
behaviour items towards UK answers; a random direction of the same norm does not."""

from __future__ import annotations

import numpy as np
import pytest

from probes.behavior.scoring import behavior_log_odds
from probes.cache.extraction import extract_dataset
from probes.datasets import load_behavior_items, load_dataset
from probes.directions import fit_direction, random_direction
from probes.interventions.hooks import steer

pytestmark = pytest.mark.integration


def test_dialect_direction_turns_us_leaning_items_uk(gemma, tmp_path):
    store = extract_dataset(
        gemma, load_dataset("dialect_us_uk", size=200, seed=0), layers=[14], progress=False
    )
    direction = fit_direction(store, 14, "mean_diff", "us", "uk")
    items = [it for it in load_behavior_items("dialect") if it.cue == "us"][:12]
    before = behavior_log_odds(gemma, items).numpy()
    with steer(gemma, direction, 0.2):
        after = behavior_log_odds(gemma, items).numpy()
    with steer(gemma, random_direction(direction, seed=0), 0.2):
        control = behavior_log_odds(gemma, items).numpy()
    leaning_us = before < 0
    assert leaning_us.sum() >= 6
    assert (after[leaning_us] > 0).mean() >= 0.9
    shift = float(np.mean(after - before))
    assert shift > 2.0
    assert float(np.mean(control - before)) < 0.2 * shift
