"""Layer-wise probes with the controls that make a probe result believable.

For every stored layer: a standardised L2 logistic probe, cross-validated with splits by template
family (no family is seen on both sides), scored on out-of-fold predictions, with a bootstrap
interval, a control task (labels shuffled within each training fold, in the spirit of Hewitt and
Liang 2019; selectivity = accuracy - control accuracy), the majority class, and a bag-of-words
logistic baseline on the raw user text with the same splits. All layers and folds are fitted at
once in torch; ``backend="sklearn"`` runs scikit-learn's LogisticRegression as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from probes import stats
from probes.cache.store import ActivationStore
from probes.errors import ProbesError
from probes.validate import check_int


@dataclass(frozen=True)
class Splits:
    """Cross-validation folds as boolean train masks, and how they were made."""

    train_masks: np.ndarray  # [folds, n] bool
    kind: str  # "group" (by template family) or "stratified" (no groups available)
    n_groups: int

    @property
    def n_folds(self) -> int:
        return int(self.train_masks.shape[0])


@dataclass(frozen=True)
class LayerwiseResult:
    """One row per layer, plus the baselines; JSON-able via ``to_dict``."""

    attribute: str
    site: str
    position: dict[str, Any]
    labels: tuple[str, ...]
    n_examples: int
    splits: str
    n_folds: int
    n_groups: int
    rows: list[dict[str, float]]
    majority_accuracy: float
    bow: dict[str, float] | None
    best_layer: int
    backend: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerwiseResult:
        """The inverse of ``to_dict`` (also for a dict read back from JSON)."""
        return cls(**{**data, "labels": tuple(data["labels"])})

    def best(self) -> dict[str, float]:
        return next(r for r in self.rows if r["layer"] == self.best_layer)

    def summary_row(self) -> dict[str, Any]:
        """The row a results table shows: best layer, accuracy with interval, selectivity, BoW."""
        best = self.best()
        return {
            "attribute": self.attribute,
            "classes": len(self.labels),
            "n": self.n_examples,
            "best_layer": self.best_layer,
            "accuracy": best["accuracy"],
            "ci_low": best["ci_low"],
            "ci_high": best["ci_high"],
            "selectivity": best["selectivity"],
            "majority": self.majority_accuracy,
            "bow_accuracy": self.bow["accuracy"] if self.bow else None,
        }


def make_splits(
    labels: Sequence[Any] | np.ndarray,
    groups: Sequence[Any] | None,
    n_folds: int = 5,
    seed: int = 0,
) -> Splits:
    """Folds grouped by template family when there are >= 2 families, else stratified."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    check_int("n_folds", n_folds, minimum=2)
    n = len(labels)
    y = np.asarray(labels)
    distinct = sorted({g for g in groups if g is not None}) if groups is not None else []
    if len(distinct) >= 2:
        k = min(n_folds, len(distinct))
        splitter = GroupKFold(n_splits=k)
        members = groups if groups is not None else []  # groups exist: >= 2 distinct families
        group_ids = np.asarray([distinct.index(g) if g is not None else -1 for g in members])
        folds = list(splitter.split(np.zeros(n), y, group_ids))
        kind = "group"
    else:
        counts = np.unique(y, return_counts=True)[1]
        k = int(min(n_folds, counts.min()))
        if k < 2:
            raise ProbesError("too few examples per class for cross-validation (need >= 2 each)")
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(n), y))
        kind = "stratified"
    masks = np.zeros((len(folds), n), dtype=bool)
    for f, (train, _test) in enumerate(folds):
        masks[f, train] = True
        if len(np.unique(y[train])) < len(np.unique(y)):
            raise ProbesError(
                f"fold {f + 1} of {len(folds)} trains on fewer classes than the data has: "
                "balance the classes within template families (group) or use fewer folds"
            )
    return Splits(masks, kind, len(distinct))


def encode_labels(labels: Sequence[Any]) -> tuple[tuple[str, ...], np.ndarray]:
    """Sorted class names and integer ids; fewer than two classes is a user error."""
    if any(label is None for label in labels):
        raise ProbesError("some rows have no label: a probe needs a label for every example")
    classes = tuple(sorted({str(label) for label in labels}))
    if len(classes) < 2:
        raise ProbesError(
            f"a probe needs at least two classes, but every label is {classes[0]!r}"
            if classes
            else "a probe needs labelled examples, but the set is empty"
        )
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.asarray([index[str(label)] for label in labels], dtype=np.int64)


def out_of_fold(proba: np.ndarray, train_masks: np.ndarray) -> np.ndarray:
    """Combine per-fold predictions [..., folds, n, k] into out-of-fold ones [..., n, k]."""
    test = (~train_masks).astype(proba.dtype)  # [F, n]
    return np.einsum("...fnk,fn->...nk", proba, test)


BOOTSTRAP_CELLS = 2**26  # above this many resampled cells the bootstrap runs in chunks


def bootstrap_interval(
    correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of mean accuracy over examples; ``correct`` is [..., n].

    Large stores resample in chunks of bounded size (the full ``[..., n_boot, n]`` gather would
    be 1.3 GB at 8 layers x 200,000 rows x 100 resamples); small ones keep their exact draws."""
    big = correct.size * n_boot > BOOTSTRAP_CELLS
    means = stats.bootstrap_means(  # [..., n_boot]
        correct, n_boot, seed, max_cells=stats.MAX_CELLS if big else None
    )
    return stats.percentile_bounds(means, level)


def classification_metrics(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and (binary) AUROC from probabilities [n, k]."""
    pred = proba.argmax(axis=1)
    out = {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=list(range(n_classes)))),
    }
    if n_classes == 2 and len(np.unique(y)) == 2:
        out["auroc"] = float(roc_auc_score(y, proba[:, 1]))
    return out


def _shuffled_within_folds(y: np.ndarray, train_masks: np.ndarray, seed: int) -> np.ndarray:
    """Per-fold labels with the training rows' labels permuted (the control task)."""
    rng = np.random.default_rng(seed + 7919)
    out = np.tile(y, (train_masks.shape[0], 1))
    for f, mask in enumerate(train_masks):
        rows = np.flatnonzero(mask)
        out[f, rows] = y[rng.permutation(rows)]
    return out


def _fit_predict(
    X: torch.Tensor,
    y: np.ndarray,
    train_masks: np.ndarray,
    n_classes: int,
    C: float | Sequence[float],
    backend: str,
    y_per_fold: np.ndarray | None = None,
) -> np.ndarray:
    """Per-fold class probabilities [layers, folds, n, k] for X [layers, n, d]; ``C`` is one
    value or one per fold."""
    if backend == "torch":
        from probes.probing.linear import fit_logistic_batched, predict_proba_batched

        fit = fit_logistic_batched(
            X,
            torch.as_tensor(y),
            torch.as_tensor(train_masks),
            n_classes,
            C=C,
            y_per_fold=None if y_per_fold is None else torch.as_tensor(y_per_fold),
        )
        return predict_proba_batched(fit, X).double().numpy()
    if backend == "sklearn":
        return _sklearn_fit_predict(X.double().numpy(), y, train_masks, n_classes, C, y_per_fold)
    raise ProbesError(f"unknown backend {backend!r}: use torch or sklearn")


def _sklearn_fit_predict(
    X: np.ndarray,
    y: np.ndarray,
    train_masks: np.ndarray,
    n_classes: int,
    C: float | Sequence[float],
    y_per_fold: np.ndarray | None,
) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    n_layers, n, _ = X.shape
    Cs = np.broadcast_to(np.asarray(C, dtype=float).reshape(-1), (len(train_masks),))
    out = np.zeros((n_layers, len(train_masks), n, n_classes))
    for layer in range(n_layers):
        for f, mask in enumerate(train_masks):
            labels = y if y_per_fold is None else y_per_fold[f]
            scaler = StandardScaler().fit(X[layer, mask])
            clf = LogisticRegression(C=float(Cs[f]), max_iter=5000, tol=1e-6)
            clf.fit(scaler.transform(X[layer, mask]), labels[mask])
            proba = clf.predict_proba(scaler.transform(X[layer]))
            out[layer, f][:, clf.classes_] = proba
    return out


def bow_baseline(
    texts: Sequence[str], y: np.ndarray, train_masks: np.ndarray, n_classes: int, C: float = 1.0
) -> dict[str, float]:
    """Bag-of-words (unigrams and bigrams) logistic regression on the raw text, same folds.

    Scored on the rows some fold tests (every row in cross-validation; the test rows when one
    mask trains on the rest, as in transfer)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = [t or "" for t in texts]
    proba = np.zeros((len(texts), n_classes))
    for mask in train_masks:
        vectorizer = CountVectorizer(ngram_range=(1, 2), lowercase=True, min_df=1)
        train_x = vectorizer.fit_transform([t for t, m in zip(texts, mask, strict=True) if m])
        clf = LogisticRegression(C=C, max_iter=5000).fit(train_x, y[mask])
        test_x = vectorizer.transform([t for t, m in zip(texts, mask, strict=True) if not m])
        proba[np.flatnonzero(~mask)[:, None], clf.classes_[None, :]] = clf.predict_proba(test_x)
    tested = (~train_masks).any(axis=0)
    return classification_metrics(y[tested], proba[tested], n_classes)


def _text_column(store: ActivationStore) -> list[str]:
    """The raw user text (without frame or suffix) when stored, else the rendered prompt."""
    user = store.column("user_text")
    return user if any(t is not None for t in user) else store.texts


WORKING_BYTES = 2**30  # float64 activations held at once by fit_layerwise and transfer


def reading_dtype(*stores: ActivationStore) -> torch.dtype:
    """The dtype probes read a store in: float32 holds every value of a float32 or
    half-precision store exactly (the fitter takes its statistics in float64 from it, and
    keeps float32 rows besides), so only float64 stores are read as float64."""
    wide = any(store.request.get("dtype") == "float64" for store in stores)
    return torch.float64 if wide else torch.float32


def layer_chunks(layers: Sequence[int], n: int, d: int, max_bytes: int) -> list[list[int]]:
    """``layers`` in consecutive chunks whose float64 ``[chunk, n, d]`` fits ``max_bytes``
    (the rows as read plus the fitter's float32 copy, for a float32 store)."""
    per = max(1, int(max_bytes) // max(1, n * d * 8))
    layers = list(layers)
    return [layers[i : i + per] for i in range(0, len(layers), per)]


def fit_layerwise(
    store: ActivationStore,
    *,
    site: str = "resid_post",
    label_col: str = "label",
    group_col: str = "group",
    n_folds: int = 5,
    C: float = 1.0,
    n_boot: int = 1000,
    seed: int = 0,
    backend: str = "torch",
    control: bool = True,
    bow: bool = True,
    attribute: str | None = None,
    layers: Sequence[int] | None = None,
    exact_folds: bool = False,
    max_working_bytes: int = WORKING_BYTES,
) -> LayerwiseResult:
    """Cross-validated probes at every stored layer of ``site`` (or the listed ``layers``),
    with controls and baselines. Layers are read and fitted in chunks of at most
    ``max_working_bytes`` of float64 activations (at least one layer)."""
    classes, y = encode_labels(store.column(label_col))
    groups = store.column(group_col)
    splits = make_splits(y, groups if any(g is not None for g in groups) else None, n_folds, seed)
    if exact_folds and splits.n_folds != n_folds:
        why = "template families" if splits.kind == "group" else "rows in the smallest class"
        raise ProbesError(
            f"{n_folds} folds asked for, but this store allows {splits.n_folds} ({why}): "
            f"pass --folds {splits.n_folds} or fewer"
        )
    chosen = list(store.layers) if layers is None else sorted(set(layers))
    if not chosen:
        raise ProbesError("no layers to probe: name at least one")
    missing = sorted(set(chosen) - set(store.layers))
    if missing:
        raise ProbesError(f"layers {missing} are not in the store (it has {list(store.layers)})")
    k = len(classes)

    masks = splits.train_masks
    shuffled = _shuffled_within_folds(y, masks, seed) if control else None
    oof_parts, control_parts = [], []
    # A bounded working set: a few layers at a time, read from the store's shards, so a store
    # larger than memory is probed layer by layer.
    for chunk in layer_chunks(chosen, len(store), store.d_model, max_working_bytes):
        X = store.read(chunk, site, reading_dtype(store))  # [chunk, n, d]
        if shuffled is not None:
            # The probe and its control task are fitted as one batch of independent problems
            # (the folds twice: true labels, then labels shuffled within each training fold).
            both = np.concatenate([np.broadcast_to(y, shuffled.shape), shuffled])
            proba = _fit_predict(X, y, np.concatenate([masks, masks]), k, C, backend, both)
            oof_parts.append(out_of_fold(proba[:, : len(masks)], masks))
            control_oof = out_of_fold(proba[:, len(masks) :], masks)
            control_parts.append((control_oof.argmax(-1) == y[None, :]).mean(-1))
        else:
            oof_parts.append(out_of_fold(_fit_predict(X, y, masks, k, C, backend), masks))
        del X
    oof = np.concatenate(oof_parts)
    control_acc = np.concatenate(control_parts) if control_parts else np.full(len(chosen), np.nan)

    correct = (oof.argmax(-1) == y[None, :]).astype(np.float64)  # [layers, n]
    low, high = bootstrap_interval(correct, n_boot=n_boot, seed=seed)
    rows = []
    for i, layer in enumerate(chosen):
        row: dict[str, float] = {"layer": layer, **classification_metrics(y, oof[i], k)}
        row["ci_low"], row["ci_high"] = float(low[i]), float(high[i])
        row["control_accuracy"] = float(control_acc[i])
        row["selectivity"] = row["accuracy"] - row["control_accuracy"]
        rows.append(row)

    majority = _majority_accuracy(y, splits.train_masks)
    bow_metrics = bow_baseline(_text_column(store), y, splits.train_masks, k) if bow else None
    best = max(rows, key=lambda r: (r["accuracy"], -r["layer"]))["layer"]
    attribute = attribute or _infer_attribute(store)
    return LayerwiseResult(
        attribute=attribute,
        site=site,
        position=store.request.get("position", {}),
        labels=classes,
        n_examples=len(y),
        splits=splits.kind,
        n_folds=splits.n_folds,
        n_groups=splits.n_groups,
        rows=rows,
        majority_accuracy=majority,
        bow=bow_metrics,
        best_layer=int(best),
        backend=backend,
        meta={"store": str(store.path), "model": store.request["model"], "C": C},
    )


def _majority_accuracy(y: np.ndarray, train_masks: np.ndarray) -> float:
    """Out-of-fold accuracy of always predicting the training fold's majority class."""
    hits = 0
    for mask in train_masks:
        majority = np.bincount(y[mask]).argmax()
        hits += int((y[~mask] == majority).sum())
    return hits / len(y)


def _infer_attribute(store: ActivationStore) -> str:
    values = {a for a in store.column("attribute") if a}
    return values.pop() if len(values) == 1 else "attribute"
