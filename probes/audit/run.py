"""The persona audit: does "I am {persona}." move safety and utility (Vijjini et al. 2024), what
do the probes read from it, can ablating persona directions undo it, and a three-tier verdict
after Kirk et al. (2023): immutable restrictions, a provider's optional ones, and the
personalization measured within those bounds.

One scoring pass over (persona x item) records the last prompt token's residual at every layer
while the answer is scored, so the read-out and the mitigation directions cost no extra forward
passes. Mitigation is cross-fitted: items are split in two folds, and each fold is re-scored with
directions fitted on the other one. Both passes score the same batches inside ``resume_from``,
so the mitigated pass starts at the read-out layer from the base pass's kept residuals (when
the mitigation layer is not earlier) instead of re-running the layers it cannot change.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from probes.audit.bias import pb_summary, persona_rows, scores_dict
from probes.audit.items import load_safety_items, load_utility_items, stratified_subset
from probes.audit.mitigation import mitigate
from probes.audit.policy import load_policy
from probes.audit.readout import READOUT_ATTRIBUTES, fit_readout_probe, readout, readout_layer
from probes.audit.result import AuditResult, PBSummary
from probes.audit.scoring import score_pass
from probes.audit.tiers import tier1_flags, tier2_checks, tier3_tailoring
from probes.datasets import PERSONAS
from probes.errors import ConfigError
from probes.interventions.prefix_reuse import resume_from
from probes.models.loading import LoadedModel


def all_personas() -> list[str | None]:
    """The no-persona baseline, then the 31 identities of ``PERSONAS`` in group order."""
    return [None, *PERSONAS]


def run_audit(
    model: LoadedModel,
    *,
    max_items: int | None = None,
    policy: str | Path | None = None,
    n_boot: int = 1000,
    n_perm: int = 1000,
    tailoring: dict[str, Any] | None = None,
    progress: bool = True,
    mitigation: bool = True,
    mitigation_layers: int = 1,
    readout_attributes: Sequence[str] = READOUT_ATTRIBUTES,
    batch_size: int = 32,
    seed: int = 0,
    cache_root: str | Path | None = None,
    store_size: int | None = None,
) -> AuditResult:
    """The persona audit end to end, as an :class:`AuditResult`; writes no files (the caller
    writes the figures with ``viz.audit.write_audit_figures`` and the report with
    ``report.audit``; ``to_dict()`` is the JSON-able structure of results.json).

    ``max_items`` caps both item sets with a category-balanced subset (cost is about
    ``32 x 2 x max_items`` forward passes per pass; the mitigation adds a second pass).
    ``store_size`` sets the examples of the read-out probes' stores (None: each dataset's own).
    """
    start = time.perf_counter()
    if max_items is not None and max_items < 2:
        raise ConfigError("max_items must be at least 2 (one item per fold)")
    audit_policy = load_policy(policy)
    utility_items = stratified_subset(load_utility_items(), max_items)
    safety_items = stratified_subset(load_safety_items(), max_items)
    layer = readout_layer(model.n_layers)
    seconds: dict[str, float] = {}
    probes: dict[str, tuple[Any, float]] = {}
    t = time.perf_counter()
    for attribute in readout_attributes:
        probes[attribute] = fit_readout_probe(
            model, attribute, layer, seed, progress, cache_root, size=store_size
        )
    readout_seconds = time.perf_counter() - t
    with ExitStack() as reuse:
        if mitigation:  # its pass re-scores the base pass's batches: skip the unchanged layers
            reuse.enter_context(resume_from(model, layer))
        base = score_pass(
            model,
            all_personas(),
            utility_items,
            safety_items,
            record_layers=range(model.n_layers) if mitigation else (),
            readout_layer=layer if readout_attributes else None,
            batch_size=batch_size,
            progress=progress,
            by_fold=mitigation,  # the mitigated pass's batches, so that it can resume
        )
        seconds["audit"] = round(base.seconds, 1)
        mitigated = None
        if mitigation:
            mitigated = mitigate(
                model,
                base,
                utility_items,
                safety_items,
                audit_policy,
                probes,
                n_layers=mitigation_layers,
                n_boot=n_boot,
                n_perm=n_perm,
                seed=seed,
                batch_size=batch_size,
                progress=progress,
            )
    scores = base.scores
    result = AuditResult(
        model=model.name,
        n_utility_items=len(utility_items),
        n_safety_items=len(safety_items),
        max_items=max_items,
        n_personas=len(scores.personas),
        policy=audit_policy.to_dict(),
        personas=persona_rows(scores, n_boot, seed),
        bias=PBSummary.from_dict(pb_summary(scores, n_boot, n_perm, seed)),
        tier1=tier1_flags(scores, audit_policy.tier1, n_boot, seed),
        tier2=tier2_checks(scores, utility_items, safety_items, audit_policy.rules, n_boot, seed),
        scores=scores_dict(scores),
        tier3={},
    )
    t = time.perf_counter()
    result.tier3 = tier3_tailoring(model, tailoring, batch_size)
    seconds["tier3"] = round(time.perf_counter() - t, 1)
    if readout_attributes:
        t = time.perf_counter()
        assert base.safety_acts is not None  # recorded because readout_attributes is set
        result.readout = {"layer": layer, **readout(probes, scores, base.safety_acts)}
        seconds["readout"] = round(readout_seconds + time.perf_counter() - t, 1)
    if mitigated is not None:
        result.mitigation = mitigated
        seconds["mitigation"] = mitigated.seconds
    seconds["total"] = round(time.perf_counter() - start, 1)
    result.seconds = seconds
    return result
