"""Counterfactual twins: behaviour items that differ only in the user's cue, paired, and how
far the answer follows the cue across the pairs (the twin effect)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from jaxtyping import Float
from torch import Tensor

from probes.datasets.cues import cues_for
from probes.errors import ProbesError
from probes.models.loading import LoadedModel

Metric = Callable[[LoadedModel, Sequence[Any]], Float[Tensor, " n"]]
"""A per-item score of the model's answer (higher = more of the positive answer set)."""


def twin_pairs(items: Sequence[Any], base_cue: str, counter_cue: str) -> list[tuple[Any, Any]]:
    """``(x, x')`` per ``pair_id``: x has ``base_cue``, x' has ``counter_cue`` (file order)."""
    by_pair: dict[str, dict[str, Any]] = defaultdict(dict)
    for item in items:
        if item.pair_id:
            by_pair[item.pair_id][item.cue] = item
    pairs = [
        (p[base_cue], p[counter_cue]) for p in by_pair.values() if {base_cue, counter_cue} <= set(p)
    ]
    if not pairs:
        raise ProbesError(f"no twin pairs with cues {base_cue!r} and {counter_cue!r}")
    return pairs


def pair_shifts(model: LoadedModel, pairs: Sequence[tuple[Any, Any]], metric: Metric) -> np.ndarray:
    """Per pair: metric(counter twin) - metric(base twin)."""
    base = metric(model, [b for b, _ in pairs]).numpy()
    counter = metric(model, [c for _, c in pairs]).numpy()
    return counter - base


def twin_effect(model: LoadedModel, attribute: str, batch_size: int = 32) -> dict[str, int | float]:
    """How far the answer follows the user's cue across the behaviour set's twin pairs: the
    share of pairs moving the expected way, and the mean and median log-odds shift."""
    from probes.behavior.scoring import behavior_log_odds
    from probes.datasets import load_behavior_items

    cues = cues_for(attribute, purpose="the twin effect")
    items = load_behavior_items(attribute)
    scores = behavior_log_odds(model, items, batch_size=batch_size).numpy()
    score_of = {id(item): float(s) for item, s in zip(items, scores, strict=True)}
    pairs = twin_pairs(items, cues.lowering, cues.raising)
    diffs = np.array([score_of[id(up)] - score_of[id(down)] for down, up in pairs])
    return {
        "pairs": len(diffs),
        "fraction_following_cue": float((diffs > 0).mean()),
        "mean_shift": float(diffs.mean()),
        "median_shift": float(np.median(diffs)),
    }
