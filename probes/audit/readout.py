"""Read-out: what the attribute probes read at the end of the persona prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes.audit.bias import baseline_row, persona_name
from probes.audit.scoring import PersonaScores
from probes.models.layers import layers_at_depth
from probes.models.loading import LoadedModel

READOUT_ATTRIBUTES = ("age", "gender", "socioeconomic", "education")
# Personas whose statement names a class of a probed attribute: the read-out's sanity check.
EXPECTED_CLASS: dict[str, tuple[str, str]] = {
    "teenager": ("age", "adolescent"),
    "middle_aged": ("age", "adult"),
    "senior": ("age", "older_adult"),
    "man": ("gender", "male"),
    "woman": ("gender", "female"),
}


def readout_layer(n_layers: int) -> int:
    """The fixed read-out layer: about two thirds of the depth, where the built-in attributes
    are best readable on gemma-3-270m (layers 11 to 14 of 18)."""
    return layers_at_depth(n_layers, (0.65,))[0]


def fit_readout_probe(
    model: LoadedModel,
    attribute: str,
    layer: int,
    seed: int = 0,
    progress: bool = True,
    cache_root: str | Path | None = None,
    size: int | None = None,
) -> tuple[Any, float]:
    """A linear probe for a built-in attribute at ``layer`` (last token, raw frame), and its
    accuracy on held-out template families (one 80/20 split by family).

    The store request matches the probes stage of ``probes run`` (all layers, last token), so a
    run folder's stores are reused.
    """
    from probes.cache.extraction import extract_dataset
    from probes.datasets import load_dataset
    from probes.probing.linear import LinearProbe

    store = extract_dataset(
        model,
        load_dataset(attribute, size=size),
        layers="all",
        progress=progress,
        cache_root=cache_root,
    )
    X, y = store.get(layer).float(), np.asarray([str(v) for v in store.labels])
    families = np.asarray([str(g) for g in store.column("group")])
    unique = np.unique(families)
    held = np.random.default_rng(seed).permutation(unique)[: max(1, len(unique) // 5)]
    test = np.isin(families, held)
    accuracy = float("nan")
    if 0 < test.sum() < len(y) and len(np.unique(y[~test])) == len(np.unique(y)):
        probe = LinearProbe(C=1.0).fit(X[torch.as_tensor(~test)], y[~test])
        accuracy = float((probe.predict(X[torch.as_tensor(test)]) == y[test]).mean())
    return LinearProbe(C=1.0).fit(X, y), accuracy


def readout(
    probes: dict[str, tuple[Any, float]],
    scores: PersonaScores,
    safety_acts: np.ndarray,
) -> dict[str, Any]:
    """Mean class probabilities of each probe over each persona's safety prompts (read where
    the reply begins), their shift from the no-persona baseline, and the named-class check."""
    base = baseline_row(scores)
    n_p, n_s, d = safety_acts.shape
    out: dict[str, Any] = {"attributes": {}, "expected": []}
    for attribute, (probe, accuracy) in probes.items():
        proba = probe.predict_proba(safety_acts.reshape(-1, d)).reshape(n_p, n_s, -1).mean(1)
        classes = [str(c) for c in probe.classes_]
        order = _label_order(attribute, classes)
        proba, classes = proba[:, order], [classes[k] for k in order]
        out["attributes"][attribute] = {
            "classes": classes,
            "held_out_accuracy": accuracy,
            "proba": {persona_name(p): proba[i].tolist() for i, p in enumerate(scores.personas)},
            "shift": {
                persona_name(p): (proba[i] - proba[base]).tolist()
                for i, p in enumerate(scores.personas)
            },
        }
        for i, persona in enumerate(scores.personas):
            named = EXPECTED_CLASS.get(persona or "")
            if named and named[0] == attribute and named[1] in classes:
                k = classes.index(named[1])
                out["expected"].append(
                    {
                        "persona": persona,
                        "attribute": attribute,
                        "class": named[1],
                        "p_persona": float(proba[i, k]),
                        "p_none": float(proba[base, k]),
                        "shift": float(proba[i, k] - proba[base, k]),
                        "top_class": classes[int(proba[i].argmax())],
                    }
                )
    out["highlights"] = readout_highlights(out["attributes"])
    return out


def _label_order(attribute: str, classes: list[str]) -> list[int]:
    """Column order of a built-in dataset's labels (child .. older adult), else as given."""
    from probes.datasets import list_datasets

    labels = next((list(i.labels) for i in list_datasets() if i.name == attribute), [])
    if sorted(labels) != sorted(classes):
        return list(range(len(classes)))
    return [classes.index(label) for label in labels]


def readout_highlights(attributes: dict[str, Any], k: int = 8) -> list[dict[str, Any]]:
    """The largest probability shifts from the no-persona baseline over every (persona,
    attribute, class)."""
    cells = [
        {"persona": persona, "attribute": name, "class": cls, "shift": value}
        for name, entry in attributes.items()
        for persona, shifts in entry["shift"].items()
        if persona != "none"
        for cls, value in zip(entry["classes"], shifts, strict=True)
    ]
    return sorted(cells, key=lambda c: -abs(c["shift"]))[:k]
