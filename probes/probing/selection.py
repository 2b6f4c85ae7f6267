"""Choose a probe's settings on text of other styles, then score it once on held-out text.

A *style* is one source of training text: the templated set, the conversation set, the
hand-written chatty corpus, a user file. Each style comes as a store per *setting* (a read-out
position and a prompt frame, e.g. ``last/raw``). Selection is leave-one-style-out: for every
setting, regularisation ``C`` and layer, a probe is trained on all styles but one and scored on
the one left out, for each validation style in turn; the candidate with the lowest mean validation
log-loss wins (ties: the earlier layer, then the smaller C). Log-loss, not accuracy: on a few dozen
validation rows accuracy ties among many candidates and flips on one row, so a solver's stopping
point could change the choice; a proper scoring rule does not tie (`scripts/selection_rules.py`
compares the rules on the validation styles alone). The test set plays no part in it.
Then one probe is trained on every style at the chosen setting and scored on the test set: at
the chosen layer (the headline), at every layer (its best is optimistic: chosen on the test),
with a bag-of-words model trained and tested the same way, calibration (expected calibration
error) and a cluster bootstrap over the test set's families. For scale, a probe trained in-set
(cross-validated on the test set itself, by family) is reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int

from probes import stats
from probes.cache.store import ActivationStore
from probes.datasets.labels import map_label
from probes.errors import ProbesError
from probes.probing.layerwise import (
    _fit_predict,
    _text_column,
    bow_baseline,
    fit_layerwise,
    out_of_fold,
)


def setting_key(position: str, frame: str) -> str:
    """``"last/raw"``: how a setting is named in results and store maps."""
    return f"{position}/{frame}"


@dataclass(frozen=True)
class Style:
    """One training style: its name and one store per setting key."""

    name: str
    stores: Mapping[str, ActivationStore]


@dataclass(frozen=True)
class Selection:
    """What leave-one-style-out chose, everything it tried, and why."""

    attribute: str
    labels: tuple[str, ...]
    styles: tuple[str, ...]
    validation: tuple[str, ...]
    settings: tuple[str, ...]
    Cs: tuple[float, ...]
    layers: tuple[int, ...]
    chosen: dict[str, Any]
    grid: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        c = self.chosen
        return (
            f"{c['setting']} at layer {c['layer']}, C={c['C']:g}: lowest mean log-loss "
            f"({c['validation_log_loss']:.3f}; accuracy {c['validation_accuracy']:.3f}) when "
            "trained without and tested on each of "
            f"{', '.join(self.validation)} ({len(self.grid)} candidates over "
            f"{len(self.settings)} settings, {len(self.Cs)} C values, {len(self.layers)} layers); "
            "the test set was not used"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason}


def _labels_of(store: ActivationStore, label_map: Mapping[str, str] | None) -> list[str]:
    return [map_label(str(v), label_map) for v in store.column("label")]


def _stack(
    stores: Sequence[ActivationStore], layers: Sequence[int], site: str
) -> Float[torch.Tensor, "layers n d"]:
    return torch.cat(
        [torch.stack([s.get(layer, site) for layer in layers]).float() for s in stores], dim=1
    )


def _shared_layers(stores: Sequence[ActivationStore], layers: Sequence[int] | None) -> list[int]:
    common = sorted(set.intersection(*(set(s.layers) for s in stores)))
    chosen = common if layers is None else [layer for layer in common if layer in set(layers)]
    if not chosen:
        raise ProbesError("the stores share none of the requested layers")
    return chosen


def select_settings(
    styles: Sequence[Style],
    *,
    validation: Sequence[str],
    Cs: Sequence[float] = (0.1, 1.0, 10.0),
    layers: Sequence[int] | None = None,
    site: str = "resid_post",
    label_map: Mapping[str, str] | None = None,
    attribute: str = "attribute",
) -> Selection:
    """Pick (setting, C, layer) by leave-one-style-out over the ``validation`` styles."""
    names = [s.name for s in styles]
    if len(styles) < 2 or not validation:
        raise ProbesError("selection needs at least two styles and one validation style")
    unknown = sorted(set(validation) - set(names))
    if unknown:
        raise ProbesError(f"validation styles {unknown} are not among the styles {names}")
    settings = sorted(set.intersection(*(set(s.stores) for s in styles)))
    if not settings:
        raise ProbesError("no setting (position/frame) has a store for every style")
    all_labels = [_labels_of(s.stores[settings[0]], label_map) for s in styles]
    classes = tuple(sorted({x for part in all_labels for x in part}))
    y = np.asarray([classes.index(x) for part in all_labels for x in part])
    style_of = np.concatenate([np.full(len(p), i) for i, p in enumerate(all_labels)])
    masks = np.stack([style_of != names.index(v) for v in validation])  # [F, n] train rows
    for v, mask in zip(validation, masks, strict=True):
        if len(np.unique(y[mask])) < len(classes):
            raise ProbesError(f"without style {v!r} some class has no training example")
    chosen_layers = _shared_layers([st for s in styles for st in s.stores.values()], layers)
    grid: list[dict[str, Any]] = []
    n_folds = len(masks)
    for setting in settings:
        X = _stack([s.stores[setting] for s in styles], chosen_layers, site)
        # Every C as extra folds of one batched fit: [L, C x F, n, k].
        per_c = [float(c) for c in Cs for _ in range(n_folds)]
        all_proba = _fit_predict(X, y, np.tile(masks, (len(Cs), 1)), len(classes), per_c, "torch")
        for c_index, C in enumerate(Cs):
            proba = all_proba[:, c_index * n_folds : (c_index + 1) * n_folds]  # [L, F, n, k]
            hits = proba.argmax(-1) == y[None, None, :]  # [L, F, n]
            true_p = np.take_along_axis(proba, y[None, None, :, None], axis=-1)[..., 0]
            nll = -np.log(np.clip(true_p, 1e-12, 1.0))  # [L, F, n]
            for i, layer in enumerate(chosen_layers):
                per_style = {
                    v: float(hits[i, f, ~masks[f]].mean()) for f, v in enumerate(validation)
                }
                per_style_ll = {
                    v: float(nll[i, f, ~masks[f]].mean()) for f, v in enumerate(validation)
                }
                grid.append(
                    {
                        "setting": setting,
                        "C": float(C),
                        "layer": int(layer),
                        "validation_accuracy": float(np.mean(list(per_style.values()))),
                        "per_style": per_style,
                        "validation_log_loss": float(np.mean(list(per_style_ll.values()))),
                        "per_style_log_loss": per_style_ll,
                    }
                )
    best = min(grid, key=lambda r: (round(r["validation_log_loss"], 12), r["layer"], r["C"]))
    position, frame = best["setting"].split("/")
    chosen = {**best, "position": position, "frame": frame}
    return Selection(
        attribute=attribute,
        labels=classes,
        styles=tuple(names),
        validation=tuple(validation),
        settings=tuple(settings),
        Cs=tuple(float(c) for c in Cs),
        layers=tuple(chosen_layers),
        chosen=chosen,
        grid=grid,
    )


def expected_calibration_error(
    proba: Float[np.ndarray, "n k"], y: Int[np.ndarray, " n"], n_bins: int = 10
) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(float)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total / len(y))


@dataclass(frozen=True)
class TransferReport:
    """The probe trained on every style at the chosen settings, scored once on the test set."""

    attribute: str
    test: str
    n_train: int
    n_test: int
    n_test_groups: int
    chance: float
    layer: int
    setting: str
    C: float
    accuracy: float
    ci_low: float
    ci_high: float
    ece: float
    best_layer: int
    best_layer_accuracy: float
    bow_accuracy: float
    in_set_accuracy: float
    in_set_layer: int
    in_set_accuracy_at_layer: float
    in_set_bow_accuracy: float | None
    rows: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferReport:
        return cls(**data)


def score_on_test(
    selection: Selection,
    styles: Sequence[Style],
    test: ActivationStore,
    *,
    test_name: str = "test",
    site: str = "resid_post",
    label_map: Mapping[str, str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> TransferReport:
    """Train on every style at the chosen setting and C; score on ``test`` (a store read at
    the chosen setting), with the baselines and the in-set reference."""
    chosen = selection.chosen
    setting, layer, C = chosen["setting"], int(chosen["layer"]), float(chosen["C"])
    train = [s.stores[setting] for s in styles]
    classes = selection.labels
    y_train = np.asarray([classes.index(x) for st in train for x in _labels_of(st, label_map)])
    test_labels = _labels_of(test, label_map)
    unknown = sorted(set(test_labels) - set(classes))
    if unknown:
        raise ProbesError(
            f"test labels {unknown} never occur in training; map them with --label-map old=new"
        )
    y_test = np.asarray([classes.index(x) for x in test_labels])
    layers = _shared_layers([*train, test], selection.layers)
    if layer not in layers:
        raise ProbesError(f"the test store lacks the chosen layer {layer}")
    X = torch.cat([_stack(train, layers, site), _stack([test], layers, site)], dim=1)
    y = np.concatenate([y_train, y_test])
    mask = np.zeros((1, len(y)), dtype=bool)
    mask[0, : len(y_train)] = True
    proba = out_of_fold(_fit_predict(X, y, mask, len(classes), C, "torch"), mask)
    proba = proba[:, len(y_train) :]  # [L, n_test, k]
    correct = (proba.argmax(-1) == y_test[None, :]).astype(float)
    groups = [str(g) for g in test.column("group")]
    boot = stats.cluster_bootstrap_means(correct, groups, n_boot, seed)
    low, high = stats.percentile_bounds(boot)
    rows = [
        {
            "layer": int(lay),
            "accuracy": float(correct[i].mean()),
            "ci_low": float(low[i]),
            "ci_high": float(high[i]),
        }
        for i, lay in enumerate(layers)
    ]
    at = layers.index(layer)
    best = max(rows, key=lambda r: (r["accuracy"], -r["layer"]))
    texts = [t for st in train for t in _text_column(st)] + _text_column(test)
    bow = bow_baseline(texts, y, mask, len(classes))
    in_set = fit_layerwise(
        test, site=site, C=C, control=False, n_boot=10, seed=seed, layers=layers, bow=True
    )
    return TransferReport(
        attribute=selection.attribute,
        test=test_name,
        n_train=len(y_train),
        n_test=len(y_test),
        n_test_groups=len(set(groups)),
        chance=1 / len(classes),
        layer=layer,
        setting=setting,
        C=C,
        accuracy=rows[at]["accuracy"],
        ci_low=rows[at]["ci_low"],
        ci_high=rows[at]["ci_high"],
        ece=expected_calibration_error(proba[at], y_test),
        best_layer=int(best["layer"]),
        best_layer_accuracy=float(best["accuracy"]),
        bow_accuracy=float(bow["accuracy"]),
        in_set_accuracy=float(in_set.best()["accuracy"]),
        in_set_layer=int(in_set.best_layer),
        in_set_accuracy_at_layer=float(
            next(r for r in in_set.rows if r["layer"] == layer)["accuracy"]
        ),
        in_set_bow_accuracy=None if in_set.bow is None else float(in_set.bow["accuracy"]),
        rows=rows,
    )


def probe_readings(
    selection: Selection,
    styles: Sequence[Style],
    target: ActivationStore,
    positive: str,
    *,
    site: str = "resid_post",
    label_map: Mapping[str, str] | None = None,
) -> Float[np.ndarray, " n"]:
    """The chosen probe's log-odds of class ``positive`` (against the rest) on ``target``'s rows
    at the chosen layer: the probe's reading of the attribute, one value per row."""
    chosen = selection.chosen
    setting, layer, C = chosen["setting"], int(chosen["layer"]), float(chosen["C"])
    classes = selection.labels
    if positive not in classes:
        raise ProbesError(f"class {positive!r} is not one of the probe's labels {list(classes)}")
    train = [s.stores[setting] for s in styles]
    y_train = np.asarray([classes.index(x) for st in train for x in _labels_of(st, label_map)])
    X = torch.cat([_stack(train, [layer], site), _stack([target], [layer], site)], dim=1)
    y = np.concatenate([y_train, np.zeros(len(target), dtype=np.int64)])
    mask = np.zeros((1, len(y)), dtype=bool)
    mask[0, : len(y_train)] = True
    proba = out_of_fold(_fit_predict(X, y, mask, len(classes), C, "torch"), mask)
    p = np.clip(proba[0, len(y_train) :, classes.index(positive)], 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


__all__ = [
    "Selection",
    "Style",
    "TransferReport",
    "expected_calibration_error",
    "probe_readings",
    "score_on_test",
    "select_settings",
    "setting_key",
]
