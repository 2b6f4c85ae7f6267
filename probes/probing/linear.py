"""L2-regularised logistic regression probes, fitted for many problems at once in torch.

The fast path fits every (layer, fold) problem in one batched optimisation over a shared
activation tensor: folds are row masks, never copies. The objective matches scikit-learn's
``LogisticRegression(solver="lbfgs")`` on ``StandardScaler``-transformed training rows exactly
(binary: one sigmoid weight vector; multiclass: full softmax), so scikit-learn is the reference.

The optimiser (``probes.probing.solver``) is a batched L-BFGS in which each problem keeps its
own history, step scale and line search, preconditioned by the problem's curvature: the Hessian
at zero first, then, a few iterations in, each fold's lumped Hessian at its iterate. It runs on
float32 row products and finishes every layer in float64, so the stopping test is float64's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import Tensor

from probes.artifacts import load_artifact, save_artifact
from probes.errors import ProbesError
from probes.probing import objective, solver

FORMAT = "probes.FittedProbe"
FORMAT_VERSION = 1
_CHUNK_BYTES = 384 * 2**20  # the solver's working set per chunk of layers, at most


def _layer_bytes(n: int, d: int, folds: int, k: int) -> int:
    """The solver's working set per layer: float32 rows, float32 inverses (one per fold and a
    shared one), and about eight float64 [n, folds, k] temporaries."""
    return n * d * 4 + (folds + 1) * (d + 1) ** 2 * 4 + 8 * n * folds * k * 8


# --------------------------------------------------------------------------------------------
# Batched fit
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BatchedFit:
    """Every (layer, fold) probe of one batched fit. Logits are ``(x - mean) / scale @ W^T + b``.

    Binary problems store one weight row (``k' = 1``, the logit of class 1); multiclass ``k``.
    """

    mean: Float[Tensor, "layers folds d"]
    scale: Float[Tensor, "layers folds d"]
    weight: Float[Tensor, "layers folds k d"]
    bias: Float[Tensor, "layers folds k"]
    n_classes: int
    n_iter: Int[Tensor, "layers folds"]
    grad_norm: Float[Tensor, "layers folds"]  # max |gradient| of the mean-scaled objective
    converged: Bool[Tensor, "layers folds"]  # gradient <= tol, or no progress left in float64


def _standardise_stats(
    X: Float[Tensor, "layers n d"], weights: Float[Tensor, "folds n"]
) -> tuple[Tensor, Tensor]:
    """Per-fold training mean and std (ddof=0, zero std -> 1), computed in float64."""
    means, scales = [], []
    L, n, d = X.shape
    blocks = objective.row_blocks(n, d)  # one block unless the store is large
    for layer in range(L):
        x = X[layer]  # float32 rows are widened block by block, never as a whole layer
        shift = sum(x[rows].to(torch.float64).sum(0) for rows in blocks) / n
        m1 = torch.zeros(weights.shape[0], d, dtype=torch.float64)
        m2 = torch.zeros_like(m1)
        for rows in blocks:
            xc = x[rows].to(torch.float64) - shift
            m1 += weights[:, rows] @ xc  # [F, d]
            m2 += weights[:, rows] @ xc.square()
        var = (m2 - m1.square()).clamp_min(0.0)
        mean = m1 + shift
        std = var.sqrt()
        tiny = 10 * torch.finfo(torch.float64).eps * mean.abs().clamp_min(1.0)
        means.append(mean)
        scales.append(torch.where(std <= tiny, torch.ones_like(std), std))
    return torch.stack(means), torch.stack(scales)


def _all_finite(X: Float[Tensor, "*shape"]) -> bool:
    """No NaN or infinity in ``X``, without a temporary of its size (``torch.isfinite``
    builds an ``abs`` copy and two boolean masks: 1.4x a float64 layer, at 200,000 rows the
    out-of-core probe's peak). Both extremes are NaN if any entry is, else +-inf if any is."""
    if X.numel() == 0:
        return True
    low, high = torch.aminmax(X)
    return math.isfinite(float(low)) and math.isfinite(float(high))


def fit_logistic_batched(
    X: Float[Tensor, "layers n d"],
    y: Int[Tensor, " n"],
    train_masks: Bool[Tensor, "folds n"],
    n_classes: int,
    *,
    C: float | Sequence[float] = 1.0,
    max_iter: int = 500,
    tol: float = 1e-6,
    y_per_fold: Int[Tensor, "folds n"] | None = None,
) -> BatchedFit:
    """Fit one L2 logistic regression per (layer, fold) on that fold's standardised training rows.

    Minimises ``C * sum_i loss_i + ||W||^2 / 2`` (intercept free), as scikit-learn's lbfgs does,
    for all problems at once; ``y_per_fold`` (e.g. shuffled control labels) overrides ``y``.
    ``C`` may be one value per fold (a grid of C values fitted as extra folds in one call).
    """
    X = torch.as_tensor(X)
    if X.ndim != 3:
        raise ProbesError(f"X must have shape [layers, n, d]; got {tuple(X.shape)}.")
    L, n, d = X.shape
    if not X.is_floating_point() or not _all_finite(X):
        raise ProbesError("X must be floating point with no NaN or infinite values.")
    masks = torch.as_tensor(train_masks, dtype=torch.bool)
    if masks.ndim != 2 or masks.shape[1] != n:
        raise ProbesError(f"train_masks must have shape [folds, {n}]; got {tuple(masks.shape)}.")
    targets = torch.as_tensor(y if y_per_fold is None else y_per_fold).long()
    targets = targets.expand(masks.shape[0], n) if targets.ndim == 1 else targets
    if targets.shape != masks.shape:
        raise ProbesError(
            f"labels must have shape [{n}] or [folds, {n}]; got {tuple(targets.shape)}."
        )
    if n_classes < 2:
        raise ProbesError(f"A logistic probe needs at least two classes; got {n_classes}.")
    Cs = torch.as_tensor(C, dtype=torch.float64).reshape(-1)
    if Cs.numel() not in (1, masks.shape[0]):
        raise ProbesError(f"C must be one value or one per fold ({masks.shape[0]}); got {C}.")
    if not bool(((Cs > 0) & (Cs < float("inf"))).all()):
        raise ProbesError(f"C must be a positive finite number; got {C}.")
    if bool(((targets < 0) | (targets >= n_classes)).any()):
        raise ProbesError(f"Labels must be class ids in 0..{n_classes - 1}.")
    n_train = masks.sum(1)
    if bool((n_train == 0).any()):
        raise ProbesError("Every fold needs at least one training row.")
    weights = masks.to(torch.float64) / n_train[:, None].to(torch.float64)
    lam = 1.0 / (Cs * n_train.to(torch.float64))
    n_out = 1 if n_classes == 2 else n_classes
    mean, scale = _standardise_stats(X, weights)

    per_chunk = max(1, _CHUNK_BYTES // _layer_bytes(n, d, masks.shape[0], n_out))
    thetas, iters, gnorms, convs = [], [], [], []
    for start in range(0, L, per_chunk):
        sl = slice(start, min(L, start + per_chunk))
        problems = objective.Problems(X[sl], targets, weights, mean[sl], scale[sl], lam, n_out)
        theta, it, gn, conv = solver.solve(problems, max_iter, tol)
        thetas.append(theta)
        iters.append(it)
        gnorms.append(gn)
        convs.append(conv)
    theta = torch.cat(thetas)
    return BatchedFit(
        mean=mean,
        scale=scale,
        weight=theta[..., :-1].contiguous(),
        bias=theta[..., -1].contiguous(),
        n_classes=n_classes,
        n_iter=torch.cat(iters),
        grad_norm=torch.cat(gnorms),
        converged=torch.cat(convs),
    )


def _probabilities(logits: Tensor) -> Tensor:
    """Class probabilities from logits [..., k'] (binary k'=1 gives two columns)."""
    if logits.shape[-1] == 1:
        p1 = torch.sigmoid(logits)
        return torch.cat([1 - p1, p1], dim=-1)
    return torch.softmax(logits, dim=-1)


def decision_batched(
    fit: BatchedFit, X: Float[Tensor, "layers n d"]
) -> Float[Tensor, "layers folds n k"]:
    """Logits of every (layer, fold) probe on every row (k' columns, 1 for binary)."""
    X = torch.as_tensor(X)
    L, n, d = X.shape
    F, k = fit.weight.shape[1:3]
    out = torch.empty(L, F, n, k, dtype=fit.weight.dtype)
    for layer in range(L):
        v = fit.weight[layer] / fit.scale[layer][:, None, :]  # [F, k, d]
        offset = fit.bias[layer] - (v * fit.mean[layer][:, None, :]).sum(-1)  # [F, k]
        # Row blocks: a float32 layer is never copied whole into float64 (out of core).
        for rows in objective.row_blocks(n, d):
            x = X[layer, rows].to(fit.weight.dtype)
            out[layer, :, rows] = torch.einsum("nd,fkd->fnk", x, v) + offset[:, None, :]
    return out


def predict_proba_batched(
    fit: BatchedFit, X: Float[Tensor, "layers n d"]
) -> Float[Tensor, "layers folds n k"]:
    """Class probabilities of every (layer, fold) probe on every row of ``X``."""
    return _probabilities(decision_batched(fit, X))


# --------------------------------------------------------------------------------------------
# A single fitted probe and its estimator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FittedProbe:
    """A fitted logistic probe: logits are ``(x - mean) / scale @ weight^T + bias``.

    Binary probes have one weight row (the logit of ``classes[1]``); multiclass one per class.
    """

    classes: tuple[str, ...]
    mean: Float[Tensor, " d"]
    scale: Float[Tensor, " d"]
    weight: Float[Tensor, "k d"]
    bias: Float[Tensor, " k"]
    C: float
    layer: int | None = None
    site: str | None = None
    attribute: str | None = None

    def decision_function(self, X: Float[Tensor, "n d"] | np.ndarray) -> Float[Tensor, "n k"]:
        """Logits per row: one column for a binary probe, one per class otherwise."""
        x = torch.as_tensor(np.asarray(X) if not isinstance(X, Tensor) else X)
        x = x.to(self.weight.dtype)
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias

    def predict_proba(self, X: Float[Tensor, "n d"] | np.ndarray) -> Float[Tensor, "n classes"]:
        """Class probabilities per row, columns in ``classes`` order."""
        return _probabilities(self.decision_function(X))

    def predict(self, X: Float[Tensor, "n d"] | np.ndarray) -> np.ndarray:
        """Most probable class label per row."""
        idx = self.predict_proba(X).argmax(-1).numpy()
        return np.asarray(self.classes, dtype=object)[idx]

    def direction(self, cls: str, dtype: torch.dtype = torch.float32) -> Float[Tensor, " d"]:
        """The class's weight row in raw activation space (``w / scale``): d logit / dx.

        For a binary probe the row of ``classes[0]`` is minus the single weight row.
        """
        key = str(cls)
        if key not in self.classes:
            raise ProbesError(f"Unknown class {cls!r}; the probe knows {list(self.classes)}.")
        index = self.classes.index(key)
        if self.weight.shape[0] == 1:
            row = self.weight[0] if index == 1 else -self.weight[0]
        else:
            row = self.weight[index]
        return (row / self.scale).to(dtype)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``path.safetensors`` (tensors) and ``path.json`` (the rest), each atomically."""
        tensors = {name: getattr(self, name) for name in ("mean", "scale", "weight", "bias")}
        meta = {
            "classes": list(self.classes),
            "C": self.C,
            "layer": self.layer,
            "site": self.site,
            "attribute": self.attribute,
        }
        return save_artifact(path, FORMAT, FORMAT_VERSION, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> FittedProbe:
        """Read a probe written by :meth:`save` (safetensors + JSON; never pickle)."""
        tensors, meta = load_artifact(path, FORMAT, FORMAT_VERSION)
        return cls(
            classes=tuple(meta["classes"]),
            mean=tensors["mean"],
            scale=tensors["scale"],
            weight=tensors["weight"],
            bias=tensors["bias"],
            C=float(meta["C"]),
            layer=meta.get("layer"),
            site=meta.get("site"),
            attribute=meta.get("attribute"),
        )


def _as_2d_float(X: Any) -> Tensor:
    x = X.detach().cpu() if isinstance(X, Tensor) else torch.as_tensor(np.asarray(X))
    if x.ndim != 2:
        raise ProbesError(f"X must have shape [n, d]; got {tuple(x.shape)}.")
    return x if x.is_floating_point() else x.to(torch.float64)


class LinearProbe(ClassifierMixin, BaseEstimator):
    """scikit-learn style L2 logistic probe on standardised features, fitted in torch."""

    def __init__(self, C: float = 1.0, max_iter: int = 500, tol: float = 1e-6) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: Any, y: Sequence[Any] | np.ndarray | Tensor) -> LinearProbe:
        """Fit on rows ``X`` [n, d] with labels ``y`` (any sortable labels, e.g. strings)."""
        x = _as_2d_float(X)
        labels = np.asarray(y.cpu().numpy() if isinstance(y, Tensor) else y)
        if x.shape[0] == 0:
            raise ProbesError("Cannot fit a probe on an empty set of rows.")
        if labels.ndim != 1 or labels.shape[0] != x.shape[0]:
            raise ProbesError(f"X has {x.shape[0]} rows but y has {labels.shape} labels.")
        classes, ids = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ProbesError(
                f"A probe needs at least two classes; all {len(labels)} labels are {classes!r}."
            )
        fit = fit_logistic_batched(
            x[None],
            torch.as_tensor(ids, dtype=torch.long),
            torch.ones(1, x.shape[0], dtype=torch.bool),
            len(classes),
            C=self.C,
            max_iter=self.max_iter,
            tol=self.tol,
        )
        self.classes_ = classes
        self.n_features_in_ = x.shape[1]
        self.n_iter_ = int(fit.n_iter[0, 0])
        self.fitted_ = FittedProbe(
            classes=tuple(str(c) for c in classes),
            mean=fit.mean[0, 0],
            scale=fit.scale[0, 0],
            weight=fit.weight[0, 0],
            bias=fit.bias[0, 0],
            C=float(self.C),
        )
        return self

    def _fitted(self) -> FittedProbe:
        if not hasattr(self, "fitted_"):
            raise ProbesError("This LinearProbe is not fitted yet; call fit first.")
        return self.fitted_

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits per row (a vector for binary probes, as scikit-learn)."""
        z = self._fitted().decision_function(_as_2d_float(X)).numpy()
        return z[:, 0] if z.shape[1] == 1 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities [n, n_classes], columns in ``classes_`` order."""
        return self._fitted().predict_proba(_as_2d_float(X)).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class per row, as the original labels."""
        return self.classes_[self.predict_proba(X).argmax(1)]


# --------------------------------------------------------------------------------------------
# scikit-learn reference (tests and benchmarks)
# --------------------------------------------------------------------------------------------


def sklearn_reference_fit(
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    train_masks: np.ndarray | Tensor,
    n_classes: int,
    C: float = 1.0,
    *,
    max_iter: int = 500,
    tol: float = 1e-6,
    return_models: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[list[Any]]]:
    """Predicted class ids [L, F, n] from a loop of StandardScaler + LogisticRegression(lbfgs).

    The reference for :func:`fit_logistic_batched` (same objective; fitted in float64).

    ``y`` may be [n] or per-fold [F, n]. With ``return_models`` also returns the fitted
    (scaler, model) pairs, indexed [layer][fold].
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float64)  # scikit-learn fits float32 input in float32
    masks = np.asarray(train_masks, dtype=bool)
    labels = np.broadcast_to(np.asarray(y), masks.shape)
    L, n, _ = X.shape
    preds = np.empty((L, masks.shape[0], n), dtype=np.int64)
    models: list[list[Any]] = []
    for layer in range(L):
        models.append([])
        for fold, mask in enumerate(masks):
            scaler = StandardScaler().fit(X[layer][mask])
            clf = LogisticRegression(C=C, max_iter=max_iter, tol=tol)
            clf.fit(scaler.transform(X[layer][mask]), labels[fold][mask])
            ids = clf.predict(scaler.transform(X[layer]))
            preds[layer, fold] = ids
            models[layer].append((scaler, clf))
    return (preds, models) if return_models else preds
