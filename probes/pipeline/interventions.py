"""Steering and patching workflows: fit directions, run sweeps, write results and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probes.datasets.cues import STEERABLE, cues_for
from probes.models.loading import LoadedModel


def directions_for(
    model: LoadedModel, attribute: str, layers: list[int], method: str, size: int | None = None
) -> list[Any]:
    """Fit one direction per layer from the attribute's built-in dataset (cached store)."""
    from probes.cache.extraction import extract_dataset
    from probes.datasets import load_dataset
    from probes.directions import fit_direction

    cues = cues_for(attribute, purpose="steering", allowed=STEERABLE)
    source, target = cues.lowering, cues.raising
    dataset = load_dataset(cues.dataset, size=size)
    # every layer, so the store is the one the probes stage already extracted (a cache hit)
    store = extract_dataset(model, dataset, layers="all", position="last")
    return [fit_direction(store, layer, method, source, target) for layer in layers]


def run_steering(
    model: LoadedModel,
    attribute: str,
    layers: list[int],
    strengths: list[float],
    out: Path,
    *,
    method: str = "mean_diff",
    kl_max: float = 0.5,
    png: bool = True,
    progress: bool = True,
    store_size: int | None = None,
    damage_and_samples: bool = True,
) -> dict[str, Any]:
    """Sweep, pick the best in-bounds strength each way; figures and the chosen direction go
    in ``out``; returns everything measured. Directions come from the attribute's store of
    ``store_size`` examples (None: the dataset's default). ``damage_and_samples=False`` skips
    the perplexity of neutral text and the greedy generations under the chosen setting."""
    from probes.datasets import load_behavior_items, render_behavior
    from probes.interventions.steering import damage_report, sample_generations, sweep
    from probes.viz.export import save_figure
    from probes.viz.steering import plot_dose_response, plot_pareto

    directions = directions_for(model, attribute, layers, method, size=store_size)
    items = load_behavior_items(attribute)
    result = sweep(model, directions, items, strengths, progress=progress)
    summary: dict[str, Any] = {"kl_max": kl_max}
    for sign, name in ((1, "towards_target"), (-1, "towards_source")):
        best = result.best(kl_max, sign)
        if best is None:
            summary[name] = None
            continue
        control = result.cell("random", best["layer"], best["strength"])
        moved = max(abs(best["mean_shift"]), 1e-9)
        summary[name] = {
            **best,
            "random_mean_shift": control["mean_shift"],
            # how far the random direction moves the metric towards the same label, relative
            # to the direction (negative: it moves it the other way), and how far at all
            "random_ratio": sign * control["mean_shift"] / moved,
            "random_abs_ratio": abs(control["mean_shift"]) / moved,
            "random_kl_mean": control["kl_mean"],
        }
    chosen = summary.get("towards_target")
    samples, damage = [], None
    if chosen:
        direction = next(d for d in directions if d.layer == chosen["layer"])
        direction.save(out / f"direction_{attribute}_layer{direction.layer}")
    if chosen and damage_and_samples:
        damage = damage_report(model, direction, chosen["strength"])
        prompts = render_behavior(items[:4], tokenizer=model.tokenizer)
        s = chosen["strength"]
        samples = sample_generations(model, direction, prompts, [-s, 0.0, s])
    payload = {
        "model": model.describe(),
        "sweep": result.to_dict(),
        "summary": summary,
        "perplexity": damage,
        "samples": samples,
    }
    save_figure(plot_dose_response(result), out / f"steer_{attribute}", png=png)
    save_figure(plot_pareto(result), out / f"steer_{attribute}_pareto", png=png)
    return payload


def print_steering_summary(summary: dict[str, Any]) -> None:
    """The best in-bounds setting each way, with its random control."""
    print(f"best in-bounds settings (mean KL on neutral text <= {summary['kl_max']} nats):")
    for name in ("towards_target", "towards_source"):
        row = summary.get(name)
        if row is None:
            print(f"  {name}: no strength stays within the KL bound")
            continue
        print(
            f"  {name}: layer {row['layer']} strength {row['strength']:+g}: flips "
            f"{row['flip_rate']:.0%} of {row['flip_eligible']} items, mean shift "
            f"{row['mean_shift']:+.2f}, KL {row['kl_mean']:.3f}; same-norm random direction: "
            f"shift {row['random_mean_shift']:+.2f} (towards the label {row['random_ratio']:+.0%}"
            f" as much), KL {row['random_kl_mean']:.2f}"
        )


def run_patching(
    model: LoadedModel, attribute: str, layers: list[int] | None, out: Path, *, png: bool = True
) -> dict[str, Any]:
    """The layer x token-group patching heatmap for an attribute's behaviour twins."""
    from probes.datasets import load_behavior_items
    from probes.interventions.patching import patching_heatmap
    from probes.viz.export import save_figure
    from probes.viz.steering import plot_patching

    cues = cues_for(attribute, purpose="patching", allowed=STEERABLE)
    base, source = cues.lowering, cues.raising
    items = load_behavior_items(attribute)
    result = patching_heatmap(model, items, base, source, layers=layers)
    payload = {"model": model.describe(), "patching": result.to_dict()}
    save_figure(plot_patching(result), out / f"patch_{attribute}", png=png)
    return payload


def steer_to_folder(
    model: LoadedModel,
    attribute: str,
    layers: list[int],
    strengths: list[float],
    out: Path,
    *,
    method: str = "mean_diff",
    kl_max: float = 0.5,
) -> dict[str, Any]:
    """``probes steer``: the steering sweep, with everything measured in ``out/results.json``."""
    from probes.atomic import atomic_write_json

    payload = run_steering(model, attribute, layers, strengths, out, method=method, kl_max=kl_max)
    atomic_write_json(out / "results.json", payload)
    return payload


def patch_to_folder(
    model: LoadedModel, attribute: str, layers: list[int] | None, out: Path
) -> dict[str, Any]:
    """``probes patch``: the patching heatmap, with its numbers in ``out/results.json``."""
    from probes.atomic import atomic_write_json

    payload = run_patching(model, attribute, layers, out)
    atomic_write_json(out / "results.json", payload)
    return payload
