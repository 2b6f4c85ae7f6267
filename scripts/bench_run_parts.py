"""Benchmark the things that made `probes run` fit its time budget, side by side.

1. A steering sweep (``probes.interventions.steering.sweep`` on the dialect behaviour items)
   with and without ``resume_from``: inside it, each steered pass re-runs only the layers from
   the steering layer on. Both runs must give the same numbers; the script checks that they do.
2. PNG export of the same figures by one-shot kaleido calls (a browser started per figure)
   and through one kept kaleido server (``probes.viz.export.png_bytes``).
3. Answer-set log-odds of the dialect behaviour items through the full 262k-row head and
   through only the answer tokens' rows (``probes.behavior.scoring.next_token_logits_at``), in a
   whole pass and in a pass resumed at ``--head-layer`` (as a sweep cell runs).
4. A probe and its shuffled-label control fitted as two L-BFGS batches and as one.
5. The persona audit's mitigated pass (every persona, ``--audit-items`` per set) run whole and
   inside ``resume_from`` at the read-out layer, where it starts from the residuals the base
   pass kept (``probes.audit.run``). Both must give the same scores.

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
    import probes.interventions.steering as steering
    from probes.datasets import load_behavior_items
    from probes.pipeline.interventions import directions_for

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

    from probes.viz.export import browser_for_png, png_bytes

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


def bench_head(model: Any, layer: int) -> list[str]:
    from probes.behavior.scoring import behavior_log_odds
    from probes.datasets import load_behavior_items
    from probes.interventions.prefix_reuse import resume_from

    items = load_behavior_items("dialect")

    def timed(full_head: bool, resumed: bool) -> tuple[Any, float]:
        model.extra.pop("output_head", None)
        if full_head:
            model.extra["output_head"] = None  # as for a model the fast path does not know
        context = resume_from(model, layer) if resumed else contextlib.nullcontext()
        with context:
            if resumed:
                behavior_log_odds(model, items)  # the pass that keeps the residual
            start = time.perf_counter()
            scores = behavior_log_odds(model, items)
            return scores, time.perf_counter() - start

    lines = []
    for resumed in (False, True):
        full, t_full = timed(True, resumed)
        rows, t_rows = timed(False, resumed)
        where = f"a pass resumed at layer {layer}" if resumed else "a whole pass"
        gap = float((full - rows).abs().max())
        lines += [
            f"| dialect log-odds ({len(items)} items), {where}, full head "
            f"| {t_full:.2f} s | 1.00x |",
            f"| same, answer-token rows only (max diff {gap:.1e}) | {t_rows:.2f} s | "
            f"**{t_full / t_rows:.2f}x** |",
        ]
    model.extra.pop("output_head", None)
    return lines


def bench_control(model: Any, dataset: str) -> list[str]:
    from probes.cache.extraction import extract_dataset
    from probes.datasets import load_dataset
    from probes.probing.layerwise import _fit_predict as fit_predict
    from probes.probing.layerwise import (
        _shuffled_within_folds,
        encode_labels,
        make_splits,
        out_of_fold,
    )

    store = extract_dataset(model, load_dataset(dataset), layers="all", progress=False)
    _, y = encode_labels(store.column("label"))
    masks = make_splits(y, store.column("group"), 5, 0).train_masks
    X = store.stack().transpose(0, 1).float().contiguous()
    k = int(y.max()) + 1
    shuffled = _shuffled_within_folds(y, masks, 0)
    start = time.perf_counter()
    apart = fit_predict(X, y, masks, k, 1.0, "torch")
    fit_predict(X, y, masks, k, 1.0, "torch", shuffled)
    t_apart = time.perf_counter() - start
    start = time.perf_counter()
    both = np.concatenate([np.broadcast_to(y, shuffled.shape), shuffled])
    joint = fit_predict(X, y, np.concatenate([masks, masks]), k, 1.0, "torch", both)
    t_joint = time.perf_counter() - start

    def accuracy(proba: np.ndarray) -> np.ndarray:
        return (out_of_fold(proba, masks).argmax(-1) == y[None, :]).mean(-1)

    gap = float(np.abs(accuracy(apart) - accuracy(joint[:, : len(masks)])).max())
    return [
        f"| probe + control, {dataset}, {X.shape[0]} layers x {len(masks)} folds, two batches "
        f"| {t_apart:.1f} s | 1.00x |",
        f"| same, one batch (largest per-layer accuracy difference {gap:.3f}) | {t_joint:.1f} s "
        f"| **{t_apart / t_joint:.2f}x** |",
    ]


def bench_audit(model: Any, max_items: int) -> list[str]:
    from probes.audit.items import load_safety_items, load_utility_items, stratified_subset
    from probes.audit.mitigation import mitigate
    from probes.audit.policy import load_policy
    from probes.audit.readout import readout_layer
    from probes.audit.run import all_personas
    from probes.audit.scoring import score_pass
    from probes.interventions.prefix_reuse import resume_from

    utility = stratified_subset(load_utility_items(), max_items)
    safety = stratified_subset(load_safety_items(), max_items)
    layer = readout_layer(model.n_layers)

    def audit() -> tuple[Any, float]:
        base = score_pass(
            model,
            all_personas(),
            utility,
            safety,
            record_layers=range(model.n_layers),
            readout_layer=layer,
            progress=False,
            by_fold=True,
        )
        start = time.perf_counter()
        after = mitigate(model, base, utility, safety, load_policy(), {}, progress=False)
        return after, time.perf_counter() - start

    whole, t_whole = audit()
    with resume_from(model, layer) as stats:
        resumed, t_resumed = audit()
    same = all(
        np.allclose(whole.scores_after[k], resumed.scores_after[k], rtol=0, atol=1e-5)
        for k in ("safety_log_odds", "utility_margin")
    )
    what = f"audit mitigation (layer {whole.layers}), 32 personas x {max_items} items per set"
    return [
        f"| {what}, whole passes | {t_whole:.1f} s | 1.00x |",
        f"| same, resumed at layer {layer} ({stats.resumed} passes) | {t_resumed:.1f} s | "
        f"**{t_whole / t_resumed:.2f}x** |",
        f"| identical scores | {'yes' if same else 'NO'} | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m", help="model spec (default: embedded)")
    parser.add_argument("--layers", default="7,11,14", help="steering layers (comma-separated)")
    parser.add_argument("--strengths", default="-0.2,0.2", help="steering strengths")
    parser.add_argument("--figures", type=int, default=6, help="figures to export as PNG")
    parser.add_argument("--head-layer", type=int, default=14, help="layer the resumed pass starts")
    parser.add_argument("--store", default="dialect_us_uk", help="dataset for the probe fits")
    parser.add_argument("--audit-items", type=int, default=10, help="audit items per set")
    parser.add_argument(
        "--only", default="", help="comma-separated parts: sweep,png,head,control,audit (all)"
    )
    args = parser.parse_args()

    from probes.models.loading import load_model

    model = load_model(args.model)
    layers = [int(x) for x in args.layers.split(",")]
    strengths = [float(x) for x in args.strengths.split(",")]
    print(f"model {model.name}: {model.n_layers} layers, torch threads {_threads()}\n")
    print("| what | time | speed-up |\n|---|---:|---:|")
    parts = {
        "sweep": lambda: bench_sweep(model, layers, strengths),
        "png": lambda: bench_png(args.figures),
        "head": lambda: bench_head(model, args.head_layer),
        "control": lambda: bench_control(model, args.store),
        "audit": lambda: bench_audit(model, args.audit_items),
    }
    chosen = [p for p in args.only.split(",") if p] or list(parts)
    unknown = [p for p in chosen if p not in parts]
    if unknown:
        raise SystemExit(f"unknown part {unknown[0]!r}: choose from {', '.join(parts)}")
    for name in chosen:
        for line in parts[name]():
            print(line)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
