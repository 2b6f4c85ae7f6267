"""`probes steer`, `probes patch` and `probes generate`: interventions from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from probes.atomic import atomic_write_json
from probes.datasets.cues import STEERABLE, cues_for
from probes.errors import ProbesError
from probes.models.layers import layers_at_depth


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ProbesError(f"expected comma-separated numbers, got {text!r}") from exc


def _layers(text: str | None, n_layers: int) -> list[int]:
    """Parse a layer list; by default three layers at 40%, 60% and 80% of the depth."""
    from probes.cache.extract import parse_layers

    if text is None:
        return layers_at_depth(n_layers, (0.4, 0.6, 0.8))
    return parse_layers(text, n_layers)


def directions_for(
    model: Any, attribute: str, layers: list[int], method: str, size: int | None = None
) -> list[Any]:
    """Fit one direction per layer from the attribute's built-in dataset (cached store)."""
    from probes.cache.extract import extract_dataset
    from probes.datasets import load_dataset
    from probes.directions import fit_direction

    cues = cues_for(attribute, purpose="steering", allowed=STEERABLE)
    source, target = cues.lowering, cues.raising
    dataset = load_dataset(cues.dataset, size=size)
    # every layer, so the store is the one the probes stage already extracted (a cache hit)
    store = extract_dataset(model, dataset, layers="all", position="last")
    return [fit_direction(store, layer, method, source, target) for layer in layers]


def run_steering(
    model: Any,
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
    from probes.viz.figures import save_figure
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


def _handle_steer(args: argparse.Namespace) -> int:
    from probes.models.loading import load_model

    strengths = _floats(args.strengths)
    model = load_model(args.model, device=args.device)
    out = Path(args.out)
    payload = run_steering(
        model,
        args.attribute,
        _layers(args.layers, model.n_layers),
        strengths,
        out,
        method=args.method,
        kl_max=args.kl_max,
    )
    atomic_write_json(out / "results.json", payload)
    print_steering_summary(payload["summary"])
    print(f"results: {out / 'results.json'}")
    return 0


def run_patching(
    model: Any, attribute: str, layers: list[int] | None, out: Path, *, png: bool = True
) -> dict[str, Any]:
    """The layer x token-group patching heatmap for an attribute's behaviour twins."""
    from probes.datasets import load_behavior_items
    from probes.interventions.patching import patching_heatmap
    from probes.viz.figures import save_figure
    from probes.viz.steering import plot_patching

    cues = cues_for(attribute, purpose="patching", allowed=STEERABLE)
    base, source = cues.lowering, cues.raising
    items = load_behavior_items(attribute)
    result = patching_heatmap(model, items, base, source, layers=layers)
    payload = {"model": model.describe(), "patching": result.to_dict()}
    save_figure(plot_patching(result), out / f"patch_{attribute}", png=png)
    return payload


def _handle_patch(args: argparse.Namespace) -> int:
    from probes.models.loading import load_model

    model = load_model(args.model, device=args.device)
    layers = _layers(args.layers, model.n_layers) if args.layers else None
    payload = run_patching(model, args.attribute, layers, Path(args.out))
    atomic_write_json(Path(args.out) / "results.json", payload)
    p = payload["patching"]
    print(f"{p['n_pairs']} twin pairs, total effect {p['total_effect']:+.2f}")
    print("layer  " + "  ".join(f"{c[:12]:>12}" for c in p["columns"]))
    for layer, row in zip(p["layers"], p["restored"], strict=True):
        print(f"{layer:>5}  " + "  ".join(f"{v:>12.2f}" for v in row))
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0


def _handle_generate(args: argparse.Namespace) -> int:
    from probes.behavior.scoring import greedy_continuations
    from probes.directions import Direction
    from probes.interventions.hooks import steer
    from probes.models.loading import load_model

    model = load_model(args.model, device=args.device)
    if args.steer:
        direction = Direction.load(args.steer)
        with steer(model, direction, args.strength, scope=args.scope):
            texts = greedy_continuations(model, args.prompt, args.max_new_tokens)
    else:
        texts = greedy_continuations(model, args.prompt, args.max_new_tokens)
    for prompt, text in zip(args.prompt, texts, strict=True):
        print(f"{prompt}\u2192{text}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="gemma-3-270m")
    common.add_argument("--device", default=None)

    s = subparsers.add_parser(
        "steer", parents=[common], help="steering sweep: strengths x layers, with controls"
    )
    s.add_argument("--attribute", default="dialect", choices=sorted(STEERABLE))
    s.add_argument(
        "--layers", default=None, help="e.g. 3,6,9 or 2-10 or all (default: 40/60/80%% depth)"
    )
    s.add_argument("--strengths", default="-0.2,-0.1,0.1,0.2", help="x typical norm")
    s.add_argument("--method", default="mean_diff", choices=["mean_diff", "probe", "twin_pca"])
    s.add_argument("--kl-max", type=float, default=0.5, help="damage bound in nats")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_handle_steer)

    p = subparsers.add_parser(
        "patch", parents=[common], help="activation patching heatmap over behaviour twins"
    )
    p.add_argument("--attribute", default="dialect", choices=sorted(STEERABLE))
    p.add_argument("--layers", default=None, help="default: every layer")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_handle_patch)

    g = subparsers.add_parser("generate", parents=[common], help="greedy generation, steered")
    g.add_argument("prompt", nargs="+")
    g.add_argument("--steer", default=None, help="a saved direction (.json/.safetensors)")
    g.add_argument("--strength", type=float, default=1.0, help="x the layer's typical norm")
    g.add_argument("--scope", default="all", choices=["prompt", "generation", "all"])
    g.add_argument("--max-new-tokens", type=int, default=20)
    g.set_defaults(func=_handle_generate)
