"""The probes stage of `probes run`: layer-wise probes with controls per attribute, each its
own cached unit, and the positions it extracts for the transfer stage in the same pass."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from probes.models.loading import LoadedModel
from probes.pipeline.config import ProbeStageConfig, RunConfig
from probes.pipeline.messages import say
from probes.pipeline.stage_cache import StageRunner


def probe_layers(model: LoadedModel, cfg: ProbeStageConfig) -> list[int] | None:
    """The layers the probes stage fits (None: every layer)."""
    from probes.cache.extraction import parse_layers

    if cfg.layers == "sparse":  # every third layer and the last: a quick look at the curve
        return sorted({*range(0, model.n_layers, 3), model.n_layers - 1})
    if cfg.layers != "all":
        return parse_layers(cfg.layers, model.n_layers)
    return None


def shared_positions(config: RunConfig) -> dict[str, tuple[str, ...]]:
    """Per attribute, the positions the transfer stage reads from the probes stage's templated
    set, which the probes stage then extracts in its own forward pass (same frame and size)."""
    from probes.pipeline.transfer import transfers

    pcfg, tcfg = config.probes, config.transfer
    if "transfer" not in config.stages or pcfg.frame not in tcfg.frames:
        return {}
    if tcfg.template_size not in (None, pcfg.size):
        return {}
    extra = tuple(p for p in tcfg.positions if p not in ("suffix", pcfg.position))
    return {name: extra for name in pcfg.attributes if extra and transfers(name, tcfg)}


def stage_probes(
    model: LoadedModel,
    cfg: ProbeStageConfig,
    runner: StageRunner,
    also_positions: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """Layer-wise probes with controls for every configured attribute, and their figures.

    Each attribute is its own cached unit, so adding one to the config redoes only that one.
    ``also_positions`` (per attribute) are read in the same forward pass and kept as stores for
    a later stage (the transfer stage's "mean"): they change no probe, so no unit's key."""
    from dataclasses import asdict

    from probes.probing.layerwise import LayerwiseResult
    from probes.viz.export import save_figure
    from probes.viz.probing import plot_overview

    layers = probe_layers(model, cfg)
    settings = {**asdict(cfg), "layers": layers}
    for unused in ("attributes", "reading_attribute"):
        settings.pop(unused)
    fitted: list[dict[str, Any]] = []
    reading: dict[str, Any] | None = None
    for name in cfg.attributes:
        with_reading = name == cfg.reading_attribute
        inputs = {"attribute": name, "reading_probe": with_reading, "settings": settings}
        unit = runner.run(
            f"probes: {name}",
            "probes",
            inputs,
            functools.partial(
                _probe_attribute,
                model,
                cfg,
                layers,
                name,
                with_reading,
                runner.out / "figures",
                (also_positions or {}).get(name, ()),
            ),
        )
        fitted.append(unit["result"])
        reading = unit.get("reading") or reading
    if fitted:
        overview = plot_overview([LayerwiseResult.from_dict(r) for r in fitted])
        save_figure(overview, runner.out / "figures" / "probe_overview")
    return {
        "results": {r["attribute"]: r for r in fitted},
        "summary": [LayerwiseResult.from_dict(r).summary_row() for r in fitted],
        "reading_probe": reading,
    }


def _probe_attribute(
    model: LoadedModel,
    cfg: ProbeStageConfig,
    layers: list[int] | None,
    name: str,
    with_reading: bool,
    figures: Path,
    also_positions: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Extract (or reuse) one attribute's store, fit its probes, draw its figures.

    The store holds every layer whichever layers are probed: extraction runs the whole body
    anyway, and the later stages (directions, erasure, mediation, audit read-out) reuse it."""
    from probes.cache.extraction import extract_dataset, extract_dataset_positions
    from probes.datasets import RenderSpec, load_dataset
    from probes.probing.layerwise import LayerwiseResult, fit_layerwise
    from probes.readers.bundle import reading_suffix
    from probes.viz.export import save_figure
    from probes.viz.probing import plot_layerwise, plot_reading_vs_control

    store_args: dict[str, Any] = {
        "render_spec": RenderSpec(frame=cfg.frame),  # type: ignore[arg-type]
        "layers": "all",
        "batch_size": cfg.batch_size,
    }
    if cfg.workers > 1 or cfg.ray_address:
        store_args.update(workers=cfg.workers, ray_address=cfg.ray_address)

    def probe(dataset: Any, **position: Any) -> LayerwiseResult:
        extra = [p for p in also_positions if p != position["position"]]
        if extra and position["position"] != "suffix":
            positions = [position["position"], *extra]
            store = extract_dataset_positions(model, dataset, positions, **store_args)[0]
        else:
            store = extract_dataset(model, dataset, **position, **store_args)
        return fit_layerwise(
            store,
            n_folds=cfg.folds,
            C=cfg.C,
            n_boot=cfg.n_boot,
            seed=cfg.seed,
            attribute=dataset.attribute,
            layers=layers,
        )

    dataset = load_dataset(name, size=cfg.size, seed=cfg.seed)
    say(f"probes: {name} ({len(dataset)} examples)")
    result = probe(dataset, position=cfg.position)
    save_figure(plot_layerwise(result), figures / f"probe_{dataset.attribute}")
    unit: dict[str, Any] = {"result": result.to_dict()}
    if with_reading:
        suffix = reading_suffix(dataset.attribute)
        say(f"probes: reading probe for {name} at the suffix {suffix!r}")
        read = probe(dataset, position="suffix", suffix=suffix)
        save_figure(
            plot_reading_vs_control(read, result),
            figures / f"reading_vs_control_{dataset.attribute}",
        )
        unit["reading"] = {"suffix": suffix, "result": read.to_dict()}
    return unit
