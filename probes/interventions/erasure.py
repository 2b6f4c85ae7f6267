"""Concept erasure experiments: does LEACE at one layer blind a fresh probe there, how much do
later layers recover, and how much of the cue's effect on the answer survives erasing or
ablating the concept over a band of layers?"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes.behavior.twins import pair_shifts, twin_pairs
from probes.cache.store import ActivationStore, write_store
from probes.datasets import load_behavior_items
from probes.directions import fit_direction, fit_eraser
from probes.interventions.hooks import ablate, erase, record
from probes.interventions.prefix_reuse import resume_from
from probes.interventions.steering import log_odds_metric
from probes.models.loading import LoadedModel
from probes.probing.layerwise import fit_layerwise


def split_families(groups: Sequence[Any]) -> tuple[list[int], list[int]]:
    """Rows of every other template family (sorted by name) vs the rest: two disjoint halves."""
    families = sorted({str(g) for g in groups})
    first = set(families[::2])
    a = [i for i, g in enumerate(groups) if str(g) in first]
    b = [i for i, g in enumerate(groups) if str(g) not in first]
    return a, b


def probe_after_erasure(
    model: LoadedModel,
    store: ActivationStore,
    layer: int,
    later_layers: Sequence[int],
    *,
    n_boot: int = 200,
    seed: int = 0,
    max_test_rows: int | None = None,
) -> dict[str, Any]:
    """Fit LEACE at ``layer`` on half of the template families, erase at every position of
    that layer, and fit fresh probes (held-out families) on the *other* half's last-token
    residual at ``layer`` and ``later_layers``, before and after erasure.

    Splitting matters: an eraser fitted on every row makes the class means of a training fold
    and its held-out fold opposite, so a cross-validated probe lands *below* chance. Also
    reported: a probe trained and scored on the very rows the eraser was fitted on (LEACE's
    guarantee: no linear classifier beats the constant one there).
    ``max_test_rows`` scores a random subset of the held-out half (the eraser still sees all
    of its half): fewer forward passes, a wider interval.
    """
    fit_rows, test_rows = split_families(store.column("group"))
    if max_test_rows is not None and max_test_rows < len(test_rows):
        rng = np.random.default_rng(seed)
        test_rows = sorted(int(i) for i in rng.choice(test_rows, max_test_rows, replace=False))
    eraser = fit_eraser(store, layer, rows=fit_rows)
    layers = sorted({layer, *later_layers})
    prompts = store.texts  # the rendered prompts the store was extracted from
    with erase(model, eraser):
        acts = record(model, [prompts[i] for i in test_rows], layers, positions=[-1])
    table = [
        {k: store.table[i].get(k) for k in ("label", "group", "pair_id", "attribute", "text")}
        for i in test_rows
    ]
    erased_acts = np.stack([acts[layer_][:, 0].float().numpy() for layer_ in layers], axis=1)
    index = torch.as_tensor(test_rows)
    original_acts = np.stack(
        [store.get(layer_)[index].float().numpy() for layer_ in layers], axis=1
    )
    fits = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, values in (("before", original_acts), ("after", erased_acts)):
            sub = write_store(
                Path(tmp) / name, {"resid_post": torch.as_tensor(values)}, table, layers=layers
            )
            fits[name] = fit_layerwise(sub, n_boot=n_boot, seed=seed, bow=False)
    before, after = fits["before"], fits["after"]
    before_rows = {r["layer"]: r for r in before.rows}
    rows = []
    for r in after.rows:
        b = before_rows.get(r["layer"], {})
        rows.append(
            {
                "layer": r["layer"],
                "accuracy_before": b.get("accuracy"),
                "accuracy_after": r["accuracy"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "control_accuracy": r["control_accuracy"],
            }
        )
    return {
        "erased_layer": layer,
        "chance": after.majority_accuracy,
        "rows": rows,
        "in_sample_accuracy_after": _in_sample_accuracy(model, store, eraser, fit_rows, layer),
        "eraser_rows": len(fit_rows),
        "test_rows": len(test_rows),
    }


def _in_sample_accuracy(
    model: LoadedModel, store: ActivationStore, eraser: Any, rows: list[int], layer: int
) -> float:
    """Training accuracy of a logistic probe on the erased rows the eraser was fitted on."""
    from probes.probing.linear import LinearProbe

    x = eraser(store.get(layer)[torch.as_tensor(rows)].float())
    labels = np.asarray([str(store.labels[i]) for i in rows])
    probe = LinearProbe(C=1.0).fit(x, labels)
    return float((probe.predict(x) == labels).mean())


def effect_under_band(
    model: LoadedModel,
    store: ActivationStore,
    attribute: str,
    band: Sequence[int],
    base_cue: str,
    source_cue: str,
) -> dict[str, Any]:
    """The cue's effect on the answer with the concept erased (LEACE) or its mean-difference
    direction ablated at every position of every layer in ``band``."""
    pairs = twin_pairs(load_behavior_items(attribute), base_cue, source_cue)
    erasers = [fit_eraser(store, layer) for layer in band]
    labels = sorted({str(x) for x in store.labels})
    directions = [fit_direction(store, layer, "mean_diff", labels[0], labels[1]) for layer in band]
    with resume_from(model, min(band)):  # the band's earlier layers run once, not three times
        original = pair_shifts(model, pairs, log_odds_metric)
        with erase(model, erasers):
            erased = pair_shifts(model, pairs, log_odds_metric)
        with ablate(model, directions):
            ablated = pair_shifts(model, pairs, log_odds_metric)
    mean = float(original.mean())
    return {
        "band": list(band),
        "n_pairs": len(pairs),
        "effect": mean,
        "effect_erased": float(erased.mean()),
        "effect_ablated": float(ablated.mean()),
        "remaining_erased": float(erased.mean()) / mean,
        "remaining_ablated": float(ablated.mean()) / mean,
    }
