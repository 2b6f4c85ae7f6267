"""Dose-response sweeps: a behaviour metric and its damage (KL on neutral text) over
steering strengths x layers, with a same-norm random direction as the control in every cell."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.behavior.scoring import (
    behavior_log_odds,
    greedy_continuations,
    kl_divergence,
    neutral_prompts,
    neutral_texts,
    next_token_logprobs,
    perplexity,
)
from probes.behavior.twins import Metric
from probes.directions import Direction, random_direction
from probes.errors import ProbesError
from probes.interventions.hooks import Scope, steer
from probes.interventions.prefix_reuse import resume_from
from probes.models.loading import LoadedModel


def log_odds_metric(model: LoadedModel, items: Sequence[Any]) -> torch.Tensor:
    """Answer-set log-odds (positive minus negative set) of behaviour items."""
    return behavior_log_odds(model, items)


@dataclass
class SweepResult:
    """One row per (kind, layer, strength); kind is ``direction`` or ``random`` (the control)."""

    attribute: str
    method: str
    source: str
    target: str
    strengths: list[float]
    layers: list[int]
    baseline: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)
    scope: str = "all"

    def cell(self, kind: str, layer: int, strength: float) -> dict[str, Any]:
        for row in self.rows:
            if (row["kind"], row["layer"], row["strength"]) == (kind, layer, strength):
                return row
        raise KeyError((kind, layer, strength))

    def best(self, kl_max: float, sign: int = 1) -> dict[str, Any] | None:
        """The direction cell with the highest flip rate (then shift) whose KL stays in bounds."""
        ok = [
            r
            for r in self.rows
            if r["kind"] == "direction"
            and np.sign(r["strength"]) == sign
            and r["kl_mean"] <= kl_max
        ]
        if not ok:
            return None
        return max(ok, key=lambda r: (r["flip_rate"], sign * r["mean_shift"], -r["kl_mean"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "method": self.method,
            "source": self.source,
            "target": self.target,
            "strengths": self.strengths,
            "layers": self.layers,
            "scope": self.scope,
            "baseline": [float(x) for x in self.baseline],
            "rows": self.rows,
        }


def flip_rate(baseline: np.ndarray, steered: np.ndarray, sign: int) -> tuple[float, int]:
    """Fraction of items leaning against ``sign`` before steering that lean with it after."""
    start = baseline < 0 if sign > 0 else baseline > 0
    if not start.any():
        return float("nan"), 0
    moved = steered[start] > 0 if sign > 0 else steered[start] < 0
    return float(moved.mean()), int(start.sum())


def sweep(
    model: LoadedModel,
    directions: Sequence[Direction],
    items: Sequence[Any],
    strengths: Sequence[float],
    *,
    metric: Metric = log_odds_metric,
    neutral: Sequence[str] | None = None,
    scope: Scope | str = "all",
    control_seed: int = 0,
    progress: bool = True,
) -> SweepResult:
    """Steer with each direction (one per layer) at each strength, and with a random direction
    of the same norm at the same layer; record the metric on ``items`` and the KL of the
    next-token distribution on neutral prompts against the unsteered model."""
    if not directions:
        raise ProbesError("a sweep needs at least one direction")
    if not items:
        raise ProbesError("a sweep needs behaviour items")
    neutral = list(neutral) if neutral is not None else neutral_prompts()
    first = directions[0]
    bar = tqdm(
        total=len(directions) * 2 * sum(1 for s in strengths if s != 0),
        desc=f"steering sweep ({first.attribute})",
        disable=not progress,
    )
    # a cell changes its direction's layer and later ones only: the earlier layers run once
    # per batch (the baseline pass keeps them), not once per cell
    with resume_from(model, [d.layer for d in directions]):
        baseline = metric(model, items).numpy()
        reference = next_token_logprobs(model, neutral)
        result = SweepResult(
            attribute=first.attribute,
            method=first.method,
            source=first.source,
            target=first.target,
            strengths=[float(s) for s in strengths],
            layers=[d.layer for d in directions],
            baseline=baseline,
            scope=scope,
        )
        for direction in directions:
            control = random_direction(direction, control_seed)
            for kind, vector in (("direction", direction), ("random", control)):
                for strength in (float(s) for s in strengths if s != 0):
                    with steer(model, vector, strength, scope=scope):
                        values = metric(model, items).numpy()
                        kl = kl_divergence(reference, next_token_logprobs(model, neutral)).numpy()
                    sign = 1 if strength > 0 else -1
                    rate, eligible = flip_rate(baseline, values, sign)
                    result.rows.append(
                        {
                            "kind": kind,
                            "layer": direction.layer,
                            "strength": strength,
                            "mean_metric": float(values.mean()),
                            "mean_shift": float((values - baseline).mean()),
                            "flip_rate": rate,
                            "flip_eligible": eligible,
                            "kl_mean": float(kl.mean()),
                            "kl_median": float(np.median(kl)),
                        }
                    )
                    bar.update()
    bar.close()
    return result


def damage_report(
    model: LoadedModel,
    direction: Direction,
    strength: float,
    *,
    scope: Scope | str = "all",
    texts: Sequence[str] | None = None,
) -> dict[str, float]:
    """Perplexity of neutral text with and without steering (full logits: run it once, not per
    sweep cell)."""
    texts = list(texts) if texts is not None else neutral_texts()
    with resume_from(model, direction.layer):
        before = perplexity(model, texts)
        with steer(model, direction, strength, scope=scope):
            after = perplexity(model, texts)
    return {"perplexity_before": before, "perplexity_after": after, "ratio": after / before}


def sample_generations(
    model: LoadedModel,
    direction: Direction,
    prompts: Sequence[str],
    strengths: Sequence[float],
    *,
    max_new_tokens: int = 12,
    scope: Scope | str = "all",
) -> list[dict[str, Any]]:
    """Greedy continuations of each prompt at each strength (0 = unsteered), for reading."""
    rows = []
    for strength in strengths:
        with steer(model, direction, strength, scope=scope):
            texts = greedy_continuations(model, prompts, max_new_tokens=max_new_tokens)
        rows += [
            {"strength": float(strength), "prompt": p, "continuation": t}
            for p, t in zip(prompts, texts, strict=True)
        ]
    return rows
