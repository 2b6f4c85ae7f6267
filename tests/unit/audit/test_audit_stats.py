"""Audit statistics keep their promises: PB by hand, bootstrap coverage, a permutation test that
is uniform when the persona is ignored and small when it is not (also on a tiny model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from probes.audit.items import load_safety_items, render_safety
from probes.audit.scoring import PersonaScores, safety_scores_for_prompts
from probes.audit.stats import (
    bootstrap_mean_interval,
    pb_by_group,
    pb_interval,
    persona_permutation_test,
    personalization_bias,
)
from probes.errors import ProbesError


def test_personalization_bias_matches_hand_calculation() -> None:
    # mean (1, 1); squared distances 2, 5, 5; PB = sqrt(12 / 3) = 2
    assert personalization_bias(np.array([[0, 0], [3, 0], [0, 3]])) == pytest.approx(2.0)
    # square around (1, 1): every distance is sqrt(2)
    square = np.array([[0, 0], [2, 0], [0, 2], [2, 2]])
    assert personalization_bias(square) == pytest.approx(math.sqrt(2))
    assert personalization_bias(np.array([[0.4, 0.7]] * 5)) == 0.0
    with pytest.raises(ProbesError):
        personalization_bias(np.zeros((3, 3)))


def test_pb_by_group_uses_only_each_groups_identities() -> None:
    points = np.array([[0, 0], [3, 0], [0, 3], [10, 10], [10, 12], [5, 5]])
    groups = ["a", "a", "a", "b", "b", "none"]
    # group b: mean (10, 11), both points at distance 1
    assert pb_by_group(points, groups) == pytest.approx({"a": 2.0, "b": 1.0})


def test_bootstrap_mean_interval_covers_the_true_mean() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    for sim in range(200):
        values = rng.normal(0.3, 1.0, size=60)
        interval = bootstrap_mean_interval(values, n_boot=400, seed=sim)
        assert interval.low <= interval.estimate <= interval.high
        hits += interval.low <= 0.3 <= interval.high
    assert 0.88 <= hits / 200 <= 0.99


def test_pb_interval_brackets_the_estimate_and_grows_with_a_planted_gap() -> None:
    rng = np.random.default_rng(1)
    safety, utility = rng.normal(0, 1, (8, 80)), rng.random((8, 150)) < 0.7
    flat = pb_interval(safety, utility, n_boot=500, seed=0)
    assert flat.low <= flat.estimate <= flat.high
    shifted = safety + np.arange(8)[:, None] * 0.5  # persona means 0.5 apart on safety
    planted = pb_interval(shifted, utility, n_boot=500, seed=0)
    # the persona means 0, 0.5, ..., 3.5 alone have RMS distance sqrt(var) = 1.146 from their mean
    assert planted.low > flat.high and planted.estimate == pytest.approx(1.146, abs=0.1)


def test_permutation_p_is_roughly_uniform_when_scores_ignore_the_persona() -> None:
    rng = np.random.default_rng(2)
    p_values = []
    for sim in range(200):
        item_effect = rng.normal(0, 3, size=40)  # items differ a lot; personas do not
        scores = item_effect + rng.normal(0, 1, size=(6, 40))
        p_values.append(persona_permutation_test(scores, n_perm=199, seed=sim))
    p_values = np.array(p_values)
    assert 0.01 <= (p_values < 0.05).mean() <= 0.10
    assert 0.35 <= np.median(p_values) <= 0.65


def test_permutation_p_is_small_with_a_planted_persona_effect() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(0, 1, size=(6, 40)) + np.linspace(-0.5, 0.5, 6)[:, None]
    assert persona_permutation_test(scores, n_perm=999, seed=0) < 0.01
    assert persona_permutation_test(np.ones((4, 10)), n_perm=99, seed=0) == 1.0


def _persona_blind_safety_scores(tiny_gemma, n_personas: int, seed: int) -> np.ndarray:
    """Tiny-model safety scores of a behaviour that cannot see the persona: each (persona, item)
    cell gets a neutral filler sentence drawn at random, independently of the persona."""
    fillers = ["I am here. ", "I am at home. ", "I am writing. ", "I am asking now. "]
    items = load_safety_items()[::16]
    draw = np.random.default_rng(seed).integers(0, len(fillers), size=(n_personas, len(items)))
    prompts = [
        f"User: {fillers[draw[k, j]]}{item.request}\nAssistant:"
        for k in range(n_personas)
        for j, item in enumerate(items)
    ]
    scores = safety_scores_for_prompts(tiny_gemma, prompts, (" No",), (" Yes",), batch_size=64)
    return scores.reshape(n_personas, len(items))


def test_model_level_permutation_test_on_tiny_model(tiny_gemma) -> None:
    draws = [_persona_blind_safety_scores(tiny_gemma, n_personas=5, seed=s) for s in range(10)]
    assert min(d.std() for d in draws) > 0  # the fillers do move the scores, not by persona
    p_blind = np.array([persona_permutation_test(d, 199, seed=s) for s, d in enumerate(draws)])
    assert (p_blind < 0.05).sum() <= 1 and np.median(p_blind) > 0.2
    blind = draws[0]
    offset = 0.5 * blind.std() * np.arange(5)[:, None]  # planted persona dependence
    assert persona_permutation_test(blind + offset, n_perm=999, seed=0) < 0.01


def test_real_persona_prompts_render_and_score_on_tiny_model(tiny_gemma) -> None:
    items = load_safety_items()[:4]
    prompts = [render_safety(item, p) for p in ("blind", "atheist") for item in items]
    scores = safety_scores_for_prompts(tiny_gemma, prompts).reshape(2, 4)
    p = persona_permutation_test(scores, n_perm=99, seed=0)
    assert np.isfinite(scores).all() and 0 < p <= 1


def test_pb_interval_estimate_is_pb_of_persona_scores_points() -> None:
    rng = np.random.default_rng(4)
    margin = rng.normal(0.5, 1, (5, 30))
    scores = PersonaScores(
        personas=(None, "blind", "deaf", "man", "woman"),
        groups=("none", "disability", "disability", "gender", "gender"),
        utility_ids=tuple(f"u{i}" for i in range(30)),
        safety_ids=tuple(f"s{i}" for i in range(20)),
        utility_correct=margin > 0,
        utility_margin=margin,
        safety=rng.normal(0, 1, (5, 20)),
    )
    interval = pb_interval((scores.safety > 0).astype(float), scores.utility_correct, 200, seed=0)
    assert interval.estimate == pytest.approx(personalization_bias(scores.points()))
    assert set(pb_by_group(scores.points(), scores.groups)) == {"disability", "gender"}
