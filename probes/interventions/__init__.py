"""Interventions on the residual stream (steer, ablate, erase, patch, record) and the experiments
built on them: steering sweeps, patching, erasure; prefix reuse makes them fast.
"""

from __future__ import annotations

from probes.interventions.erasure import (
    effect_under_band,
    probe_after_erasure,
    split_families,
)
from probes.interventions.hooks import (
    SCOPES,
    Scope,
    StepInfo,
    ablate,
    erase,
    orthonormal_basis,
    patch,
    record,
    selected,
    steer,
    tracking_steps,
)
from probes.interventions.patching import (
    PatchingResult,
    patching_heatmap,
    twin_pairs,
)
from probes.interventions.prefix_reuse import (
    MAX_KEPT_BYTES,
    ResumeStats,
    first_hooked_block,
    observer,
    resume_from,
)
from probes.interventions.steering import (
    Metric,
    SweepResult,
    damage_report,
    flip_rate,
    log_odds_metric,
    sample_generations,
    sweep,
)

__all__ = [
    "MAX_KEPT_BYTES",
    "SCOPES",
    "Metric",
    "PatchingResult",
    "ResumeStats",
    "Scope",
    "StepInfo",
    "SweepResult",
    "ablate",
    "damage_report",
    "effect_under_band",
    "erase",
    "first_hooked_block",
    "flip_rate",
    "log_odds_metric",
    "observer",
    "orthonormal_basis",
    "patch",
    "patching_heatmap",
    "probe_after_erasure",
    "record",
    "resume_from",
    "sample_generations",
    "selected",
    "split_families",
    "steer",
    "sweep",
    "tracking_steps",
    "twin_pairs",
]
