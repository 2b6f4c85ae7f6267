"""Statistics of the persona audit: per-persona intervals, PB with its item-noise null, PB
per group, the permutation tests, and the paired PB change of the mitigation."""

from __future__ import annotations

from typing import Any

import numpy as np

from probes.audit.scoring import PersonaScores
from probes.audit.stats import (
    bootstrap_mean_interval,
    pb_by_group,
    pb_interval,
    persona_permutation_test,
    personalization_bias,
)
from probes.datasets import PERSONAS
from probes.errors import ProbesError


def persona_name(persona: str | None) -> str:
    """The persona's key in results, ``"none"`` for the no-persona baseline."""
    return "none" if persona is None else persona


def refusal_rate(scores: PersonaScores) -> np.ndarray:
    """``[p, n_safety]`` 1 where refusal is the likelier opening (the rate PB uses)."""
    return (scores.safety > 0).astype(float)


def baseline_row(scores: PersonaScores) -> int:
    """Row of the no-persona baseline (None); a ProbesError when there is none."""
    if None not in scores.personas:
        raise ProbesError("the audit needs the no-persona baseline (None) among the personas")
    return scores.personas.index(None)


def identity_rows(scores: PersonaScores) -> np.ndarray:
    """Rows of the stated identities (every persona but the baseline)."""
    return np.array([i for i, p in enumerate(scores.personas) if p is not None])


def persona_rows(scores: PersonaScores, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Per persona: utility accuracy, refusal rate and log-odds with bootstrap intervals over
    items, and the paired shift of each from the no-persona baseline."""
    base = baseline_row(scores)
    rate, correct = refusal_rate(scores), scores.utility_correct.astype(float)
    rows = []
    for i, persona in enumerate(scores.personas):
        row: dict[str, Any] = {
            "persona": persona_name(persona),
            "group": scores.groups[i],
            "text": "(no persona)" if persona is None else PERSONAS[persona].text,
        }
        for name, values in (
            ("utility", correct),
            ("refusal_rate", rate),
            ("safety_log_odds", scores.safety),
        ):
            row[name] = bootstrap_mean_interval(values[i], n_boot, seed).to_dict()
            shift = bootstrap_mean_interval(values[i] - values[base], n_boot, seed)
            row[f"{name}_shift"] = shift.to_dict()
        rows.append(row)
    return rows


def pb_null(rate: np.ndarray, correct: np.ndarray, n_perm: int, seed: int) -> dict[str, float]:
    """PB expected when the persona does not matter: each item's scores permuted across the
    identities (safety and utility items independently). Item noise alone gives PB > 0, so
    this is the reference PB is read against; ``p`` tests PB itself."""
    observed = personalization_bias(np.stack([rate.mean(1), correct.mean(1)], axis=1))
    rng = np.random.default_rng(seed)
    null = np.empty(n_perm)
    for b in range(n_perm):
        r = np.take_along_axis(rate, rng.random(rate.shape).argsort(0), 0)
        c = np.take_along_axis(correct, rng.random(correct.shape).argsort(0), 0)
        null[b] = personalization_bias(np.stack([r.mean(1), c.mean(1)], axis=1))
    return {
        "mean": float(null.mean()),
        "q95": float(np.quantile(null, 0.95)),
        "p": float((1 + (null >= observed - 1e-12).sum()) / (1 + n_perm)),
    }


def pb_summary(scores: PersonaScores, n_boot: int, n_perm: int, seed: int) -> dict[str, Any]:
    """PB over the 31 identities (no-persona baseline excluded) on (refusal rate, utility
    accuracy), its interval, the item-noise null, PB per group, and the permutation tests."""
    ident = identity_rows(scores)
    rate, correct = refusal_rate(scores)[ident], scores.utility_correct[ident].astype(float)
    points = np.stack([rate.mean(1), correct.mean(1)], axis=1)
    groups = [scores.groups[i] for i in ident]
    by_group = {}
    for group, value in pb_by_group(points, groups).items():
        rows = np.array([g == group for g in groups])
        interval = pb_interval(rate[rows], correct[rows], n_boot, seed)
        by_group[group] = {
            **interval.to_dict(),
            "estimate": value,
            "n_personas": int(rows.sum()),
            "null": pb_null(rate[rows], correct[rows], n_perm, seed),
        }
    return {
        "pb": pb_interval(rate, correct, n_boot, seed).to_dict(),
        "pb_null": pb_null(rate, correct, n_perm, seed),
        "by_group": by_group,
        "permutation_p": {
            "safety_log_odds": persona_permutation_test(scores.safety, n_perm, seed),
            "utility_margin": persona_permutation_test(scores.utility_margin, n_perm, seed),
        },
        "n_identities": len(ident),
    }


def pb_change(
    before: PersonaScores, after: PersonaScores, n_boot: int, seed: int
) -> dict[str, float]:
    """PB before minus PB after, with a paired bootstrap over items (same draws for both)."""
    ident = identity_rows(before)

    def parts(s: PersonaScores) -> tuple[np.ndarray, np.ndarray]:
        return refusal_rate(s)[ident], s.utility_correct[ident].astype(float)

    (rb, cb), (ra, ca) = parts(before), parts(after)

    def pb(r: np.ndarray, c: np.ndarray) -> float:
        return personalization_bias(np.stack([r.mean(1), c.mean(1)], axis=1))

    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        i = rng.integers(0, rb.shape[1], rb.shape[1])
        j = rng.integers(0, cb.shape[1], cb.shape[1])
        draws[b] = pb(rb[:, i], cb[:, j]) - pb(ra[:, i], ca[:, j])
    low, high = np.quantile(draws, [0.025, 0.975])
    return {"estimate": pb(rb, cb) - pb(ra, ca), "low": float(low), "high": float(high)}


def scores_dict(scores: PersonaScores) -> dict[str, Any]:
    """The raw per-item scores, JSON-able (for re-analysis without the model)."""
    return {
        "personas": [persona_name(p) for p in scores.personas],
        "utility_ids": list(scores.utility_ids),
        "safety_ids": list(scores.safety_ids),
        "utility_margin": np.round(scores.utility_margin, 4).tolist(),
        "safety_log_odds": np.round(scores.safety, 4).tolist(),
    }
