"""Transfer: train a probe on one store and test it on another, layer by layer, and the matrix
of every (train, test) pair at one layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from probes.cache.store import ActivationStore, describe_difference, store_identity
from probes.errors import ProbesError
from probes.probing.layerwise import (
    WORKING_BYTES,
    _fit_predict,
    _text_column,
    bootstrap_interval,
    bow_baseline,
    classification_metrics,
    encode_labels,
    fit_layerwise,
    layer_chunks,
    out_of_fold,
    reading_dtype,
)


@dataclass(frozen=True)
class TransferResult:
    """A probe trained on one store and tested on another, per layer, beside bag-of-words."""

    train: str
    test: str
    labels: tuple[str, ...]
    rows: list[dict[str, float]]
    bow: dict[str, float]
    n_train: int
    n_test: int

    def at_layer(self, layer: int) -> dict[str, float]:
        return next(r for r in self.rows if r["layer"] == layer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def transfer(
    train_store: ActivationStore,
    test_store: ActivationStore,
    *,
    site: str = "resid_post",
    label_col: str = "label",
    C: float = 1.0,
    n_boot: int = 1000,
    seed: int = 0,
    train_name: str | None = None,
    test_name: str | None = None,
    max_working_bytes: int = WORKING_BYTES,
) -> TransferResult:
    """Train on every row of ``train_store``, test on ``test_store``, at each shared layer
    (a few layers at a time, as :func:`fit_layerwise`).

    Both stores must come from the same model (fingerprint), width and attribute."""
    a, b = store_identity(train_store), store_identity(test_store)
    if a != b:
        raise ProbesError(
            f"cannot transfer from {train_store.path.name} ({a['model']}) to "
            f"{test_store.path.name} ({b['model']}): {describe_difference(a, b)}"
        )
    classes, y_train = encode_labels(train_store.column(label_col))
    test_labels = [str(v) for v in test_store.column(label_col)]
    unknown = sorted(set(test_labels) - set(classes))
    if unknown:
        raise ProbesError(f"test labels {unknown} never occur in the training store")
    y_test = np.asarray([classes.index(v) for v in test_labels])
    layers = [layer for layer in train_store.layers if layer in test_store.layers]
    if not layers:
        raise ProbesError("the two stores share no layer")
    if train_store.d_model != test_store.d_model:
        raise ProbesError("the two stores come from models of different widths")
    n_train, k = len(y_train), len(classes)
    y = np.concatenate([y_train, y_test])
    mask = np.zeros((1, len(y)), dtype=bool)
    mask[0, :n_train] = True
    parts = []
    for chunk in layer_chunks(layers, len(y), train_store.d_model, max_working_bytes):
        # Both stores read into one buffer: no concatenated copy next to the two reads.
        dtype = reading_dtype(train_store, test_store)
        X = torch.empty(len(chunk), len(y), train_store.d_model, dtype=dtype)
        train_store.read(chunk, site, out=X[:, :n_train])
        test_store.read(chunk, site, out=X[:, n_train:])
        parts.append(out_of_fold(_fit_predict(X, y, mask, k, C, "torch"), mask)[:, n_train:])
        del X
    proba = np.concatenate(parts)
    correct = (proba.argmax(-1) == y_test[None, :]).astype(np.float64)
    low, high = bootstrap_interval(correct, n_boot=n_boot, seed=seed)
    rows = []
    for i, layer in enumerate(layers):
        row = {"layer": layer, **classification_metrics(y_test, proba[i], k)}
        row["ci_low"], row["ci_high"] = float(low[i]), float(high[i])
        rows.append(row)
    texts = _text_column(train_store) + _text_column(test_store)
    bow_metrics = bow_baseline(texts, y, mask, k, C)
    return TransferResult(
        train=train_name or str(train_store.path.name),
        test=test_name or str(test_store.path.name),
        labels=classes,
        rows=rows,
        bow=bow_metrics,
        n_train=n_train,
        n_test=len(y_test),
    )


def transfer_matrix(
    stores: dict[str, ActivationStore], *, layer: int, site: str = "resid_post", C: float = 1.0
) -> dict[str, Any]:
    """Probe and BoW accuracy for every (train, test) pair of named stores at one layer.

    The diagonal is in-distribution: it uses the cross-validated probe on that store.
    """
    names = list(stores)
    probe = np.zeros((len(names), len(names)))
    bow = np.zeros_like(probe)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                result = fit_layerwise(stores[a], site=site, C=C, control=False, n_boot=10)
                row = next(r for r in result.rows if r["layer"] == layer)
                probe[i, j] = row["accuracy"]
                bow[i, j] = result.bow["accuracy"] if result.bow else np.nan
            else:
                t = transfer(stores[a], stores[b], site=site, C=C, n_boot=10)
                probe[i, j] = t.at_layer(layer)["accuracy"]
                bow[i, j] = t.bow["accuracy"]
    return {"names": names, "layer": layer, "probe": probe.tolist(), "bow": bow.tolist()}
