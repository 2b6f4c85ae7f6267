"""L2-regularised logistic regression probes, fitted for many problems at once in torch.

The fast path fits every (layer, fold) problem in one batched optimisation over a shared
activation tensor: folds are row masks, never copies. The objective matches scikit-learn's
``LogisticRegression(solver="lbfgs")`` on ``StandardScaler``-transformed training rows exactly
(binary: one sigmoid weight vector; multiclass: full softmax), so scikit-learn is the reference.

The optimiser is a batched, preconditioned L-BFGS: each problem keeps its own history, step
scale and Armijo line search, so problems do not slow each other down, and the initial inverse
Hessian of every problem is the exact Hessian at zero built from its layer's feature correlation
(one inverse per layer, shared by the folds). This removes the feature-correlation
ill-conditioning of residual-stream activations, which is what makes plain L-BFGS slow here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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

FORMAT = "probes.FittedProbe"
FORMAT_VERSION = 1
_HISTORY = 10  # L-BFGS memory, as scikit-learn's default (maxcor=10)
_MAX_BACKTRACKS = 30
_ARMIJO_C1 = 1e-4
_FTOL = 64 * torch.finfo(torch.float64).eps
_Map = Callable[[Tensor], Tensor]
_CHUNK_BYTES = 256 * 2**20  # float64 working copy of X is built for at most this many bytes at once


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


ROW_BLOCK_BYTES = 64 * 2**20  # float64 bytes per block of the statistics passes


def _row_blocks(n: int, d: int) -> list[slice]:
    """Row slices whose float64 ``[rows, d]`` temporaries fit ``ROW_BLOCK_BYTES``: a single
    slice for every store up to that size, so small stores' numbers do not change."""
    step = max(1, ROW_BLOCK_BYTES // (8 * max(1, d)))
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def _standardise_stats(
    X: Float[Tensor, "layers n d"], weights: Float[Tensor, "folds n"]
) -> tuple[Tensor, Tensor]:
    """Per-fold training mean and std (ddof=0, zero std -> 1), computed in float64."""
    means, scales = [], []
    for layer in range(X.shape[0]):
        x = X[layer].to(torch.float64)
        shift = x.mean(0)
        m1 = torch.zeros(weights.shape[0], x.shape[1], dtype=torch.float64)
        m2 = torch.zeros_like(m1)
        for rows in _row_blocks(*x.shape):  # one block unless the store is large
            xc = x[rows] - shift
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


class _Problems:
    """Objective and preconditioner of a batch of problems on a chunk of layers (float64)."""

    def __init__(
        self,
        X: Tensor,
        targets: Tensor,
        weights: Tensor,
        mean: Tensor,
        scale: Tensor,
        lam: Tensor,
        n_out: int,
    ) -> None:
        self.X = X  # [L, n, d]
        self.targets = targets  # [F, n] class ids
        self.weights = weights  # [F, n]: mask / n_train
        self.mean, self.scale, self.lam = mean, scale, lam  # [L,F,d], [L,F,d], [F]
        self.n_out = n_out
        L, _, d = X.shape
        self.shape = (L, weights.shape[0], n_out, d + 1)
        if n_out > 1:
            self.onehot = torch.nn.functional.one_hot(targets, n_out).to(X.dtype)  # [F, n, k]
        self.alpha = 0.25 if n_out == 1 else 1.0 / n_out  # loss Hessian scale at zero
        self.inverse = self._preconditioner()

    def _preconditioner(self) -> Tensor:
        """Inverse of ``alpha * corr + lam * I`` per layer (all rows, globally scaled).

        Only the optimisation path depends on it, not the minimiser, so float32 statistics
        and the rows of every fold together are good enough; it is shared by the folds.
        """
        L, n, d = self.X.shape
        inverses = []
        # A floor on the ridge keeps the factorisation safe for huge C or d > n.
        ridge = max(float(self.lam.mean()), 1e-4 * self.alpha)
        eye = torch.eye(d, dtype=torch.float64)
        for layer in range(L):
            x = self.X[layer]
            blocks = _row_blocks(n, d)  # one block unless the store is large
            centre = x.mean(0)
            if len(blocks) == 1:
                spread = x.std(0, correction=0)
            else:  # no full-size temporary: the variance block by block
                sq = torch.zeros(d, dtype=torch.float64)
                for rows in blocks:
                    sq += (x[rows] - centre).square().sum(0)
                spread = (sq / n).sqrt()
            spread = spread.clamp_min(1e-12)
            corr = torch.zeros(d, d, dtype=torch.float64)
            for rows in blocks:
                z = ((x[rows] - centre) / spread).to(torch.float32)
                corr += (z.T @ z).to(torch.float64)
            corr /= n
            chol, info = torch.linalg.cholesky_ex(self.alpha * corr + ridge * eye)
            jitter = ridge
            while int(info) != 0:  # float32 rounding made it indefinite: add more ridge
                jitter *= 10
                chol, info = torch.linalg.cholesky_ex(self.alpha * corr + jitter * eye)
            inverses.append(torch.cholesky_inverse(chol))
        return torch.stack(inverses).to(self.X.dtype)

    def precondition(self, g: Tensor) -> Tensor:
        """Apply the inverse of the per-layer Hessian-at-zero to ``g`` [L, F, k', d+1]."""
        L, F, k, d1 = g.shape
        w = g[..., :-1].reshape(L, F * k, d1 - 1)
        w = torch.bmm(w, self.inverse).reshape(L, F, k, d1 - 1)  # the inverse is symmetric
        return torch.cat([w, g[..., -1:] / self.alpha], dim=-1)

    def value_grad(self, theta: Tensor, layers: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Objective ``mean loss + lam/2 ||w||^2`` and its gradient, per problem.

        ``layers`` restricts the work to those layers (``theta`` then holds only them).
        """
        X, mean, scale = self.X, self.mean, self.scale
        if layers is not None:
            X, mean, scale = X[layers], mean[layers], scale[layers]
        L, F, k, d1 = theta.shape
        n = X.shape[1]
        w, b = theta[..., :-1], theta[..., -1]
        v = w / scale[:, :, None, :]  # raw-space weights [L, F, k, d]
        offset = b - (v * mean[:, :, None, :]).sum(-1)  # [L, F, k]
        z = torch.bmm(X, v.reshape(L, F * k, d1 - 1).transpose(1, 2))  # [L, n, F*k]
        z = z.reshape(L, n, F, k).permute(0, 2, 1, 3) + offset[:, :, None, :]  # [L, F, n, k]
        if k == 1:
            z = z[..., 0]
            y = self.targets.to(z.dtype)
            loss = torch.nn.functional.softplus(z) - y * z
            resid = (torch.sigmoid(z) - y)[..., None]
        else:
            lse = torch.logsumexp(z, dim=-1)
            loss = lse - z.gather(-1, self.targets[None, :, :, None].expand(L, -1, -1, 1))[..., 0]
            resid = torch.exp(z - lse[..., None]) - self.onehot
        resid = resid * self.weights[None, :, :, None]  # [L, F, n, k]
        value = (loss * self.weights).sum(-1) + 0.5 * self.lam * w.square().sum((-1, -2))
        r = resid.permute(0, 2, 1, 3).reshape(L, n, F * k)
        graw = torch.bmm(r.transpose(1, 2), X).reshape(L, F, k, d1 - 1)
        rsum = resid.sum(2)  # [L, F, k]
        gw = (graw - rsum[..., None] * mean[:, :, None, :]) / scale[:, :, None, :]
        gw = gw + self.lam[None, :, None, None] * w
        return value, torch.cat([gw, rsum[..., None]], dim=-1)


@dataclass
class _History:
    """L-BFGS memory of every problem: a ring of (s, y) pairs; unused slots have rho = 0."""

    S: Tensor  # [m, P, D]
    Y: Tensor  # [m, P, D]
    rho: Tensor  # [m, P]
    gamma: Tensor  # [P]: scale of the preconditioned initial inverse Hessian
    slot: int = 0

    @classmethod
    def empty(cls, P: int, D: int, dtype: torch.dtype) -> _History:
        zeros = torch.zeros(_HISTORY, P, D, dtype=dtype)
        return cls(
            zeros, zeros.clone(), torch.zeros(_HISTORY, P, dtype=dtype), torch.ones(P, dtype=dtype)
        )

    def direction(self, g: Tensor, precondition: _Map) -> Tensor:
        """Two-loop recursion: minus the approximate inverse Hessian times ``g``."""
        q = g.clone()
        alphas = torch.zeros_like(self.rho)
        for j in range(_HISTORY):
            i = (self.slot - 1 - j) % _HISTORY
            alphas[i] = self.rho[i] * (self.S[i] * q).sum(1)
            q -= alphas[i, :, None] * self.Y[i]
        r = self.gamma[:, None] * precondition(q)
        for j in range(_HISTORY):
            i = (self.slot + j) % _HISTORY
            beta = self.rho[i] * (self.Y[i] * r).sum(1)
            r += (alphas[i] - beta)[:, None] * self.S[i]
        return -r

    def forget(self, which: Tensor) -> None:
        self.rho[:, which] = 0.0
        self.gamma[which] = 1.0

    def push(self, s: Tensor, y: Tensor, precondition: _Map) -> None:
        """Store the pair where its curvature is positive; skipped problems get an empty slot."""
        sy = (s * y).sum(1)
        ok = sy > 1e-12 * y.norm(dim=1) * s.norm(dim=1)
        self.S[self.slot] = torch.where(ok[:, None], s, 0.0)
        self.Y[self.slot] = torch.where(ok[:, None], y, 0.0)
        self.rho[self.slot] = torch.where(ok, 1.0 / sy.where(ok, torch.ones_like(sy)), 0.0)
        hy = (y * precondition(y)).sum(1)
        ok = ok & (hy > 0)
        self.gamma = torch.where(ok, sy / hy.where(ok, torch.ones_like(hy)), self.gamma)
        self.slot = (self.slot + 1) % _HISTORY


def _line_search(
    value_grad: Callable[[Tensor], tuple[Tensor, Tensor]],
    theta: Tensor,
    direction: Tensor,
    f: Tensor,
    g: Tensor,
    slope: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-problem Armijo backtracking from a unit step; returns step, f, g and failures.

    Every trial evaluates all problems in one pass; a problem keeps the first step it accepts.
    """
    pending = slope < 0
    step = pending.to(f.dtype)
    f_new, g_new = f.clone(), g.clone()
    for _ in range(_MAX_BACKTRACKS):
        trial_f, trial_g = value_grad(theta + step[:, None] * direction)
        ok = pending & (trial_f <= f + _ARMIJO_C1 * step * slope)
        f_new[ok], g_new[ok] = trial_f[ok], trial_g[ok]
        pending &= ~ok
        if not bool(pending.any()):
            break
        # Safeguarded minimiser of the quadratic through f, slope and the trial value.
        curvature = (trial_f - f - step * slope).clamp_min(1e-300)
        shrunk = (-slope * step.square() / (2 * curvature)).clamp(0.1 * step, 0.5 * step)
        step = torch.where(pending, shrunk, step)
    return torch.where(pending, 0.0, step), f_new, g_new, pending


def _lbfgs(problems: _Problems, max_iter: int, tol: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batched preconditioned L-BFGS; each problem has its own memory, scale and step.

    A problem stops when its max |gradient| <= tol, or (as scipy's L-BFGS-B with
    scikit-learn's ftol = 64 eps) when float64 sees no more progress.
    """
    shape = problems.shape
    P, D = shape[0] * shape[1], math.prod(shape[2:])

    # Problems that have stopped take zero steps, so their value and gradient never change:
    # only layers with a problem still running are evaluated; the others reuse the cache.
    cache: dict[str, Tensor] = {}

    def value_grad(theta: Tensor) -> tuple[Tensor, Tensor]:
        layers = cache.get("layers")
        if layers is None:
            f, g = problems.value_grad(theta.reshape(shape))
            return f.reshape(P), g.reshape(P, D)
        f_part, g_part = problems.value_grad(theta.reshape(shape)[layers], layers)
        f = cache["f"].reshape(shape[:2]).clone()
        g = cache["g"].reshape(shape).clone()
        f[layers], g[layers] = f_part, g_part
        return f.reshape(P), g.reshape(P, D)

    def precondition(t: Tensor) -> Tensor:
        return problems.precondition(t.reshape(shape)).reshape(P, D)

    theta = torch.zeros(P, D, dtype=problems.X.dtype)
    f, g = value_grad(theta)
    memory = _History.empty(P, D, theta.dtype)
    n_iter = torch.zeros(P, dtype=torch.long)
    stuck = torch.zeros(P, dtype=torch.bool)
    done = g.abs().amax(1) <= tol
    for _ in range(max_iter):
        active = ~done
        if not bool(active.any()):
            break
        running = active.reshape(shape[:2]).any(1)
        cache.update(f=f, g=g)
        cache["layers"] = None if bool(running.all()) else running.nonzero()[:, 0]  # type: ignore[assignment]
        direction = memory.direction(g, precondition)
        lost = active & ~((g * direction).sum(1) < 0)
        if bool(lost.any()):  # not a descent direction: restart those problems
            memory.forget(lost)
            direction[lost] = -precondition(g)[lost]
        direction[~active] = 0.0
        slope = (g * direction).sum(1)
        step, f_new, g_new, failed = _line_search(value_grad, theta, direction, f, g, slope)
        s = step[:, None] * direction
        theta = theta + s
        memory.push(s, g_new - g, precondition)
        flat = (f - f_new) <= _FTOL * torch.maximum(f.abs(), f_new.abs()).clamp_min(1.0)
        stuck |= active & (failed | flat)
        f, g = f_new, g_new
        n_iter += active.long()
        done = stuck | (g.abs().amax(1) <= tol)
    grad_norm = g.abs().amax(1)
    return theta.reshape(shape), n_iter, grad_norm, (grad_norm <= tol) | stuck


def fit_logistic_batched(
    X: Float[Tensor, "layers n d"],
    y: Int[Tensor, " n"],
    train_masks: Bool[Tensor, "folds n"],
    n_classes: int,
    *,
    C: float = 1.0,
    max_iter: int = 500,
    tol: float = 1e-6,
    y_per_fold: Int[Tensor, "folds n"] | None = None,
) -> BatchedFit:
    """Fit one L2 logistic regression per (layer, fold) on that fold's standardised training rows.

    Minimises ``C * sum_i loss_i + ||W||^2 / 2`` (intercept free), as scikit-learn's lbfgs does,
    for all problems at once; ``y_per_fold`` (e.g. shuffled control labels) overrides ``y``.
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
    if not 0 < C < float("inf"):
        raise ProbesError(f"C must be a positive finite number; got {C}.")
    if bool(((targets < 0) | (targets >= n_classes)).any()):
        raise ProbesError(f"Labels must be class ids in 0..{n_classes - 1}.")
    n_train = masks.sum(1)
    if bool((n_train == 0).any()):
        raise ProbesError("Every fold needs at least one training row.")
    weights = masks.to(torch.float64) / n_train[:, None].to(torch.float64)
    lam = 1.0 / (C * n_train.to(torch.float64))
    n_out = 1 if n_classes == 2 else n_classes
    mean, scale = _standardise_stats(X, weights)

    per_chunk = max(1, _CHUNK_BYTES // max(1, n * d * 8))
    thetas, iters, gnorms, convs = [], [], [], []
    for start in range(0, L, per_chunk):
        sl = slice(start, min(L, start + per_chunk))
        problems = _Problems(
            X[sl].to(torch.float64), targets, weights, mean[sl], scale[sl], lam, n_out
        )
        theta, it, gn, conv = _lbfgs(problems, max_iter, tol)
        thetas.append(theta)
        iters.append(it.reshape(theta.shape[:2]))
        gnorms.append(gn.reshape(theta.shape[:2]))
        convs.append(conv.reshape(theta.shape[:2]))
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
    out = []
    for layer in range(X.shape[0]):
        x = X[layer].to(fit.weight.dtype)
        v = fit.weight[layer] / fit.scale[layer][:, None, :]  # [F, k, d]
        offset = fit.bias[layer] - (v * fit.mean[layer][:, None, :]).sum(-1)  # [F, k]
        out.append(torch.einsum("nd,fkd->fnk", x, v) + offset[:, None, :])
    return torch.stack(out)


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
