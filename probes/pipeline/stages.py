"""Stages of `probes run` after the probes: interventions (steering sweep, patching, erasure),
mediation case studies and the persona audit. Each returns a JSON-able dict and writes its
figures into the run folder's ``figures/``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from probes.errors import ProbesError
from probes.models.layers import layers_at_depth
from probes.models.loading import LoadedModel
from probes.pipeline.config import (
    AuditStageConfig,
    InterventionStageConfig,
    MediationStageConfig,
)
from probes.pipeline.messages import say
from probes.pipeline.stage_cache import StageRunner

# Layer choices that scale with depth: fractions of the model's layers (the last layer is -1).
AUTO_LAYERS: dict[str, dict[str, tuple[float, ...]]] = {
    "steering": {"auto": (0.4, 0.6, 0.8), "auto-small": (0.6, 0.8), "auto-tiny": (0.8,)},
    "patching": {
        "auto": (*(i / 6 for i in range(6)), -1),
        "auto-small": (0, 1 / 3, 2 / 3, -1),
        "auto-tiny": (1 / 3, 2 / 3),
    },
    "mediation": {
        "auto": (1 / 3, 0.5, 2 / 3, 5 / 6, -1),
        "auto-small": (0.5, 2 / 3, -1),
        "auto-tiny": (2 / 3, -1),
    },
}


def _auto_layers(model: LoadedModel, text: str, kind: str = "steering") -> list[int]:
    """``auto``/``auto-small`` as fractions of the depth, else a layer list like '3,6,9'."""
    from probes.cache.extraction import parse_layers

    n = model.n_layers
    fractions = AUTO_LAYERS[kind].get(text)
    if fractions is None:
        return parse_layers(text, n)
    return layers_at_depth(n, fractions)


def stage_interventions(
    model: LoadedModel,
    cfg: InterventionStageConfig,
    out: Path,
    stages: tuple[str, ...],
    store_size: int | None = None,
) -> dict[str, Any]:
    """Steering sweep (with random controls), the patching heatmap and LEACE erasure; the
    directions and the eraser come from the attribute's store of ``store_size`` examples."""
    from probes.cache.extraction import extract_dataset
    from probes.datasets import load_dataset
    from probes.datasets.cues import CUES
    from probes.interventions.erasure import effect_under_band, probe_after_erasure
    from probes.pipeline.interventions import run_patching, run_steering

    figures = out / "figures"
    result: dict[str, Any] = {"attribute": cfg.attribute}
    layers = _auto_layers(model, cfg.layers)
    chosen_layer = layers[len(layers) // 2]
    if "steering" in stages:
        say(f"steering: {cfg.attribute}, layers {layers}, strengths {list(cfg.strengths)}")
        steering = run_steering(
            model,
            cfg.attribute,
            layers,
            list(cfg.strengths),
            figures,
            method=cfg.method,
            kl_max=cfg.kl_max,
            store_size=store_size,
            damage_and_samples=cfg.damage_and_samples,
        )
        result["steering"] = steering
        best = steering["summary"].get("towards_target")
        if best:
            chosen_layer = int(best["layer"])
    if "patching" in stages:
        patch_layers = _auto_layers(model, cfg.patch_layers, "patching")
        say(f"patching: {cfg.attribute}, {len(patch_layers)} layers")
        try:
            result["patching"] = run_patching(model, cfg.attribute, patch_layers, figures)[
                "patching"
            ]
        except ProbesError as exc:  # e.g. no twin pairs of equal token length on this model
            say(f"patching skipped: {exc}")
            result["patching_skipped"] = str(exc)
    if "erasure" in stages:
        layer = chosen_layer if cfg.erase_layer == "auto" else int(cfg.erase_layer)
        dataset = load_dataset(CUES[cfg.attribute].dataset, size=store_size)
        store = extract_dataset(model, dataset, layers="all")
        later = sorted({min(model.n_layers - 1, layer + k) for k in (1, 2, 4, 8)})
        say(f"erasure: LEACE at layer {layer}, fresh probes at {sorted({layer, *later})}")
        erasure = probe_after_erasure(model, store, layer, later, max_test_rows=cfg.erase_test_rows)
        band = list(range(layer, min(model.n_layers, layer + cfg.erase_band)))
        base, source = CUES[cfg.attribute].lowering, CUES[cfg.attribute].raising
        say(f"erasure: cue effect with layers {band} erased / ablated")
        erasure["band"] = effect_under_band(model, store, cfg.attribute, band, base, source)
        result["erasure"] = erasure
    return result


def stage_mediation(
    model: LoadedModel,
    cfg: MediationStageConfig,
    runner: StageRunner,
    store_size: int | None = None,
) -> dict[str, Any]:
    """The IP paper's case studies: TE, NIE, NDE per layer through the attribute direction and
    through the whole last-token residual. Each case is its own cached unit."""
    from dataclasses import asdict

    settings = asdict(cfg)
    settings.pop("cases")
    result: dict[str, Any] = {}
    for name in cfg.cases:
        result[name] = runner.run(
            f"mediation: {name}",
            "mediation",
            {"case": name, "settings": settings, "store_size": store_size},
            functools.partial(_mediation_case, model, cfg, name, runner.out, store_size),
        )
    return result


def _mediation_case(
    model: LoadedModel, cfg: MediationStageConfig, name: str, out: Path, store_size: int | None
) -> dict[str, Any]:
    """One case study for ``probes run``: its figure into ``out/figures``; returns the payload."""
    from probes.mediation import analyse_case_study, case_study
    from probes.viz.mediation import save_case_study_figure

    case = case_study(name)
    layers = _auto_layers(model, cfg.layers, "mediation")
    say(f"mediation: {case.name} ({case.question})")
    result = analyse_case_study(
        model,
        case,
        layers=layers,
        pairs=cfg.pairs,
        n_boot=cfg.n_boot,
        n_perm=cfg.n_perm,
        seed=0,
        store_size=store_size,
    )
    save_case_study_figure(result, out / "figures")
    return result.to_dict()


def audit_tailoring(earlier: dict[str, Any]) -> dict[str, Any] | None:
    """What earlier stages measured of tailoring, for the audit's tier 3."""
    tailoring: dict[str, Any] = {}
    steering = earlier.get("interventions", {}).get("steering")
    if steering and steering["summary"].get("towards_target"):
        tailoring["dialect_steering_flip_rate"] = steering["summary"]["towards_target"]["flip_rate"]
    for name, payload in earlier.get("mediation", {}).items():
        first = next(iter(payload["results"].values()))[0]
        tailoring[f"{name}_total_effect"] = first["te"]["mean"]
    return tailoring or None


def stage_audit(
    model: LoadedModel,
    cfg: AuditStageConfig,
    out: Path,
    tailoring: dict[str, Any] | None,
    store_size: int | None = None,
) -> dict[str, Any]:
    """The persona audit with mitigation and tiers; tier 3 shows what earlier stages measured."""
    from probes.audit.run import run_audit
    from probes.viz.audit import write_audit_figures

    say(f"audit: {cfg.max_items or 'all'} items per set, policy {cfg.policy or 'default'}")
    result = run_audit(
        model,
        max_items=cfg.max_items,
        policy=cfg.policy,
        n_boot=cfg.n_boot,
        n_perm=cfg.n_perm,
        tailoring=tailoring,
        mitigation=cfg.mitigation,
        store_size=store_size,
    )
    result.figures = write_audit_figures(result, out / "figures")
    return result.to_dict()  # the stage cache stores this; AuditResult.from_dict rebuilds it
