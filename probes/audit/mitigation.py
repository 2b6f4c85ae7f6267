"""Mitigation: mean-ablate the persona directions, cross-fitted over item folds."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from probes.audit.bias import (
    baseline_row,
    identity_rows,
    pb_change,
    pb_summary,
    persona_rows,
    scores_dict,
)
from probes.audit.items import SafetyItem, UtilityItem
from probes.audit.policy import AuditPolicy
from probes.audit.readout import readout
from probes.audit.result import MitigationResult, PBSummary
from probes.audit.scoring import N_FOLDS, AuditPass, score_pass
from probes.audit.stats import bootstrap_mean_interval
from probes.audit.tiers import tier1_flags
from probes.directions import Direction
from probes.errors import ProbesError
from probes.interventions.hooks import ablate, steer
from probes.models.loading import LoadedModel


@dataclass(frozen=True)
class Mitigation:
    """Per fold: the directions fitted on the *other* fold, and the no-persona mean that the
    ablated component is reset to (mean-ablation rather than projection to zero)."""

    layers: tuple[int, ...]
    directions: dict[int, list[Direction]] = field(default_factory=dict)
    restore: dict[int, list[Direction]] = field(default_factory=dict)

    @contextmanager
    def __call__(self, model: LoadedModel, fold: int) -> Iterator[None]:
        """While active: fold ``fold``'s directions ablated and reset to the baseline mean."""
        with ExitStack() as stack:
            stack.enter_context(ablate(model, self.directions[fold], positions=(-1,)))
            stack.enter_context(steer(model, self.restore[fold], 1.0, positions=(-1,)))
            yield


def persona_signal(run: AuditPass, fold: int) -> np.ndarray:
    """Per recorded layer: mean over identities of ||mu_persona - mu_none|| / ||mu_none||."""
    if run.fold_means is None:
        raise ProbesError("the audit pass recorded no layers, so it has no persona signal")
    means = run.fold_means[:, fold]  # [p, L, d]
    base = baseline_row(run.scores)
    diff = np.linalg.norm(means - means[base], axis=-1)  # [p, L]
    ident = identity_rows(run.scores)
    return diff[ident].mean(0) / np.linalg.norm(means[base], axis=-1).clip(1e-12)


def fit_mitigation(
    run: AuditPass, n_layers: int = 1, layers: Sequence[int] | None = None
) -> Mitigation:
    """Directions that separate each identity's prompts from the no-persona prompts (one per
    identity, so each group owns the span of its identities' directions), at the ``n_layers``
    recorded layers where that separation is largest, fitted per fold."""
    from probes.interventions.hooks import orthonormal_basis

    if run.fold_means is None:
        raise ProbesError("the mitigation needs a pass that recorded residuals")
    base, ident = baseline_row(run.scores), identity_rows(run.scores)
    if layers is not None:
        missing = [layer for layer in layers if layer not in run.layers]
        if missing:
            raise ProbesError(f"layer {missing[0]} was not recorded in the audit pass")
        chosen = sorted(run.layers.index(layer) for layer in layers)
    else:
        signal = sum(persona_signal(run, f) for f in range(N_FOLDS))
        # the last layer writes the answer: ablating there edits the output, not the persona
        last = max(run.layers)
        candidates = [j for j in np.argsort(-signal) if run.layers[j] < last or last == 0]
        chosen = sorted(candidates[:n_layers])
    directions: dict[int, list[Direction]] = {}
    restore: dict[int, list[Direction]] = {}
    for fold in range(N_FOLDS):
        means = torch.as_tensor(run.fold_means[:, 1 - fold], dtype=torch.float64)
        directions[fold], restore[fold] = [], []
        for j in chosen:
            layer = run.layers[j]
            vectors = means[ident, j] - means[base, j]
            for i, vector in zip(ident, vectors, strict=True):
                persona = run.scores.personas[i]
                directions[fold].append(
                    Direction(
                        vector=vector.float(),
                        layer=layer,
                        method="mean_diff",
                        attribute="persona",
                        source="none",
                        target=str(persona),
                        meta={"group": run.scores.groups[i], "fitted_on_fold": 1 - fold},
                    )
                )
            q = orthonormal_basis(vectors)
            back = (q @ (q.T @ means[base, j])).float()
            restore[fold].append(
                Direction(vector=back, layer=layer, typical_norm=float(back.norm()))
            )
    return Mitigation(
        layers=tuple(run.layers[j] for j in chosen), directions=directions, restore=restore
    )


def neutral_kl(model: LoadedModel, mitigation: Mitigation, batch_size: int = 32) -> float:
    """Mean KL (nats) of the next token on the built-in neutral prompts, mitigated vs not,
    averaged over the two folds' direction sets."""
    from probes.behavior.scoring import kl_divergence, neutral_prompts, next_token_logprobs

    prompts = neutral_prompts()
    reference = next_token_logprobs(model, prompts, batch_size)
    kls = []
    for fold in range(N_FOLDS):
        with mitigation(model, fold):
            kls.append(float(kl_divergence(reference, next_token_logprobs(model, prompts)).mean()))
    return float(np.mean(kls))


def mitigate(
    model: LoadedModel,
    base: AuditPass,
    utility_items: Sequence[UtilityItem],
    safety_items: Sequence[SafetyItem],
    policy: AuditPolicy,
    probes: dict[str, tuple[Any, float]],
    *,
    n_layers: int = 1,
    layers: Sequence[int] | None = None,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> MitigationResult:
    """Re-run the audit with the persona directions mean-ablated (cross-fitted) and report what
    PB, tier 1, utility, the read-out and neutral text make of it."""
    mitigation = fit_mitigation(base, n_layers, layers)
    after = score_pass(
        model,
        base.scores.personas,
        utility_items,
        safety_items,
        readout_layer=base.readout_layer if probes else None,
        intervention=lambda fold: mitigation(model, fold),
        batch_size=batch_size,
        progress=progress,
        desc="persona audit, mitigated",
    )
    start = time.perf_counter()
    kl = neutral_kl(model, mitigation, batch_size)
    before_s, after_s = base.scores, after.scores
    change = after_s.utility_correct.mean(0) - before_s.utility_correct.mean(0)  # per item
    b, a = baseline_row(before_s), baseline_row(after_s)
    result = MitigationResult(
        method=(
            "mean-ablation at the last prompt token of the span of the 31 identity-minus-"
            "no-persona mean differences, cross-fitted over 2 item folds"
        ),
        layers=list(mitigation.layers),
        n_directions=len(mitigation.directions[0]),
        pb_after=PBSummary.from_dict(pb_summary(after_s, n_boot, n_perm, seed)),
        pb_change=pb_change(before_s, after_s, n_boot, seed),
        personas_after=persona_rows(after_s, n_boot, seed),
        tier1_after=tier1_flags(after_s, policy.tier1, n_boot, seed),
        utility_before=float(before_s.utility_correct.mean()),
        utility_after=float(after_s.utility_correct.mean()),
        utility_change=bootstrap_mean_interval(change, n_boot, seed).to_dict(),
        baseline_utility_before=float(before_s.utility_correct[b].mean()),
        baseline_utility_after=float(after_s.utility_correct[a].mean()),
        baseline_refusal_log_odds_before=float(before_s.safety[b].mean()),
        baseline_refusal_log_odds_after=float(after_s.safety[a].mean()),
        neutral_kl=kl,
        scores_after=scores_dict(after_s),
    )
    if probes and after.safety_acts is not None:
        result.readout_after = readout(probes, after_s, after.safety_acts)
    result.seconds = round(after.seconds + time.perf_counter() - start, 1)
    return result
