"""Benchmark the two things that made `probes run` fit its time budget, side by side.

1. A steering sweep (``probes.steering.sweep`` on the dialect behaviour items) with and without
   ``resume_from``: inside it, each steered pass re-runs only the layers from the steering
   layer on. Both runs must give the same numbers; the script checks that they do.
2. PNG export of the same figures by one-shot kaleido calls (a browser started per figure)
   and through one kept kaleido server (``probes.plots.png_bytes``).

    python scripts/bench_run_parts.py --model gemma-3-270m --layers 7,11,14 --figures 6
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import Any

import numpy as np


def _sweep(model: Any, layers: list[int], strengths: list[float], resume: bool) -> Any:
    import probes.steering as steering
    from probes.datasets import load_behavior_items
    from probes.steering_cli import directions_for

    directions = directions_for(model, "dialect", layers, "mean_diff")
    items = load_behavior_items("dialect")
    original = steering.resume_from
    if not resume:  # the same code path with the prefix reuse switched off
        steering.resume_from = lambda *a, **k: contextlib.nullcontext()
    try:
        start = time.perf_counter()
        result = steering.sweep(model, directions, items, strengths, progress=False)
        return result, time.perf_counter() - start
    finally:
        steering.resume_from = original


def bench_sweep(model: Any, layers: list[int], strengths: list[float]) -> list[str]:
    off, t_off = _sweep(model, layers, strengths, resume=False)
    on, t_on = _sweep(model, layers, strengths, resume=True)
    same = all(
        np.isclose(a[k], b[k], rtol=0, atol=1e-6, equal_nan=True)
        for a, b in zip(off.rows, on.rows, strict=True)
        for k in ("mean_metric", "kl_mean", "flip_rate")
    )
    cells = len(off.rows)
    return [
        f"| steering sweep, layers {layers}, {cells} cells, whole passes | {t_off:.1f} s | 1.00x |",
        f"| same sweep inside `resume_from` | {t_on:.1f} s | **{t_off / t_on:.2f}x** |",
        f"| identical numbers | {'yes' if same else 'NO'} | |",
    ]


def bench_png(n_figures: int) -> list[str]:
    import plotly.graph_objects as go

    from probes.plots import browser_for_png, png_bytes

    browser = browser_for_png()
    if browser is None:
        return ["| PNG export | no browser found: skipped | |"]
    os.environ.setdefault("BROWSER_PATH", browser)
    rng = np.random.default_rng(0)
    figures = [
        go.Figure(go.Scatter(x=np.arange(18), y=rng.random(18), mode="lines+markers"))
        for _ in range(n_figures)
    ]
    start = time.perf_counter()
    for fig in figures:
        fig.to_image(format="png", scale=2)  # plotly's default: a browser per call
    oneshot = (time.perf_counter() - start) / n_figures
    start = time.perf_counter()
    for fig in figures:
        png_bytes(fig)  # the first call starts the kept server: counted here
    kept = (time.perf_counter() - start) / n_figures
    return [
        f"| PNG, one-shot kaleido, per figure ({n_figures}) | {oneshot:.2f} s | 1.00x |",
        f"| PNG, kept kaleido server, per figure | {kept:.2f} s | **{oneshot / kept:.1f}x** |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m", help="model spec (default: embedded)")
    parser.add_argument("--layers", default="7,11,14", help="steering layers (comma-separated)")
    parser.add_argument("--strengths", default="-0.2,0.2", help="steering strengths")
    parser.add_argument("--figures", type=int, default=6, help="figures to export as PNG")
    args = parser.parse_args()

    from probes.models import load_model

    model = load_model(args.model)
    layers = [int(x) for x in args.layers.split(",")]
    strengths = [float(x) for x in args.strengths.split(",")]
    print(f"model {model.name}: {model.n_layers} layers, torch threads {_threads()}\n")
    print("| what | time | speed-up |\n|---|---:|---:|")
    for line in bench_sweep(model, layers, strengths) + bench_png(args.figures):
        print(line)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
