"""The batched optimiser behind ``fit_logistic_batched``: many L2 logistic regressions at once.

Every (layer, fold) problem keeps its own L-BFGS memory, step scale and Armijo line search, so
problems do not slow each other down; they share passes over their layer's rows.

Three things make it fast on badly conditioned residual-stream activations:

- Curvature preconditioning. The initial inverse Hessian of L-BFGS is the inverse of the
  problem's Hessian with each row's softmax curvature lumped to one weight,
  ``sum_i w_i s_i z_i z_i^T + lam I`` over augmented standardised rows ``z_i = [x_i, 1]``
  (``s_i = p_i (1 - p_i)`` for binary problems, which makes it the exact Hessian, and
  ``(1 - |p_i|^2) / (k - 1)`` for softmax ones). It is built first at zero (the Hessian at
  zero) and rebuilt once after a few iterations, when the probabilities say which rows are
  still uncertain; that second matrix is what removes the slow tail of plain L-BFGS. One
  matrix per layer serves its folds: it averages their curvature, and is mapped exactly into
  each fold's own standardisation.
- Mixed precision. Rows are centred and scaled by the layer's statistics once, so float32
  products lose nothing that matters; the iterations run on the float32 copy, and each layer
  finishes on the float64 copy, where the gradient test and the line search are exact.
- Evaluating only what moves: a pass covers only layers with a problem still running, and a
  line-search trial only layers with a problem still searching.

The objective and its minimiser do not depend on any of this: the stopping test is the max
absolute gradient of the float64 mean-scaled objective, as scikit-learn's lbfgs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

_HISTORY = 10  # L-BFGS memory, as scikit-learn's default (maxcor=10)
_MAX_BACKTRACKS = 30
_ARMIJO_C1 = 1e-4
_FTOL = 64 * torch.finfo(torch.float64).eps  # scikit-learn's L-BFGS-B ftol
_FTOL32 = 64 * torch.finfo(torch.float32).eps  # float32 progress this small hands over to float64
MIXED = True
GAMMA = True
INV32 = True
REFRESH_AT = (6,)  # iterations at which the preconditioner is rebuilt at the iterate
ROW_BLOCK_BYTES = 64 * 2**20  # float64 bytes per block of the statistics passes
_KEEP = 1e-3  # rows whose curvature is below this fraction of the ridge skip the Gram matrix


def row_blocks(n: int, d: int) -> list[slice]:
    """Row slices whose float64 ``[rows, d]`` temporaries fit ``ROW_BLOCK_BYTES``: a single
    slice for every store up to that size, so small stores' numbers do not change."""
    step = max(1, ROW_BLOCK_BYTES // (8 * max(1, d)))
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def _layer_stats(x: Float[Tensor, "n d"]) -> tuple[Float[Tensor, " d"], Float[Tensor, " d"]]:
    """Mean and std (ddof=0, zero std -> 1) of one layer's rows, in float64 row blocks."""
    n, d = x.shape
    blocks = row_blocks(n, d)
    centre = torch.zeros(d, dtype=torch.float64)
    for rows in blocks:
        centre += x[rows].to(torch.float64).sum(0)
    centre /= n
    sq = torch.zeros(d, dtype=torch.float64)
    for rows in blocks:
        sq += (x[rows].to(torch.float64) - centre).square().sum(0)
    spread = (sq / n).sqrt()
    tiny = 10 * torch.finfo(torch.float64).eps * centre.abs().clamp_min(1.0)
    return centre, torch.where(spread <= tiny, torch.ones_like(spread), spread)


class Problems:
    """Objective, gradient and preconditioner of every (layer, fold) problem of a chunk.

    Parameters ``theta`` [L, F, k', d+1] are the weights on each fold's standardised features
    and the intercept. The rows are stored once per layer, centred and scaled by the layer's
    statistics (``u``); a fold's standardised row is ``D * u + b`` with per-fold ``D``, ``b``.
    """

    def __init__(
        self,
        X: Float[Tensor, "layers n d"],
        targets: Int[Tensor, "folds n"],
        weights: Float[Tensor, "folds n"],
        mean: Float[Tensor, "layers folds d"],
        scale: Float[Tensor, "layers folds d"],
        lam: Float[Tensor, " folds"],
        n_out: int,
    ) -> None:
        L, n, d = X.shape
        F = weights.shape[0]
        self.shape = (L, F, n_out, d + 1)
        self.lam = lam
        self.weights = weights.T.contiguous()  # [n, F]: mask / n_train
        if n_out == 1:
            self.labels = targets.T.to(torch.float64)  # [n, F]
        else:
            self.labels = torch.nn.functional.one_hot(targets.T, n_out).to(torch.float64)
        self.u64 = torch.empty(L, n, d, dtype=torch.float64)
        self.D = torch.empty(L, F, d, dtype=torch.float64)
        self.b = torch.empty(L, F, d, dtype=torch.float64)
        for layer in range(L):
            centre, spread = _layer_stats(X[layer])
            for rows in row_blocks(n, d):
                self.u64[layer, rows] = (X[layer, rows].to(torch.float64) - centre) / spread
            self.D[layer] = spread / scale[layer]
            self.b[layer] = (centre - mean[layer]) / scale[layer]
        self.u32 = self.u64.to(torch.float32)
        self.inverse = torch.empty(L, d + 1, d + 1, dtype=torch.float32 if INV32 else torch.float64)

    def logits(
        self, theta: Float[Tensor, "folds k d1"], layer: int, exact: bool
    ) -> Float[Tensor, "n folds k"]:
        """Logits of one layer's problems on every row (a linear map of ``theta``)."""
        F, k, d1 = theta.shape
        w, bias = theta[..., :-1], theta[..., -1]
        v = w * self.D[layer][:, None, :]  # weights on u
        offset = bias + (w * self.b[layer][:, None, :]).sum(-1)  # [F, k]
        u = self.u64[layer] if exact else self.u32[layer]
        z = (u @ v.reshape(F * k, d1 - 1).T.to(u.dtype)).to(torch.float64)
        return z.view(-1, F, k) + offset

    def loss(
        self, z: Float[Tensor, "layers n folds k"]
    ) -> tuple[Float[Tensor, "layers folds"], Float[Tensor, "layers n folds k"]]:
        """Mean training loss per problem and its gradient in the logits (weighted rows)."""
        if z.shape[-1] == 1:
            z1 = z[..., 0]
            loss = torch.nn.functional.softplus(z1) - self.labels * z1
            resid = (torch.sigmoid(z1) - self.labels)[..., None]
        else:
            lse = torch.logsumexp(z, dim=-1)
            loss = lse - (z * self.labels).sum(-1)
            resid = torch.exp(z - lse[..., None]) - self.labels
        return (loss * self.weights).sum(1), resid * self.weights[..., None]

    def penalty(self, theta: Float[Tensor, "layers folds k d1"]) -> Float[Tensor, "layers folds"]:
        """The L2 penalty ``lam/2 ||w||^2`` (the intercept is free)."""
        return 0.5 * self.lam * theta[..., :-1].square().sum((-1, -2))

    def gradient(
        self,
        theta: Float[Tensor, "folds k d1"],
        resid: Float[Tensor, "n folds k"],
        layer: int,
        exact: bool,
    ) -> Float[Tensor, "folds k d1"]:
        """Gradient of one layer's objectives from their weighted logit residuals."""
        F, k, d1 = theta.shape
        u = self.u64[layer] if exact else self.u32[layer]
        raw = (resid.reshape(-1, F * k).T.to(u.dtype) @ u).to(torch.float64).view(F, k, d1 - 1)
        rsum = resid.sum(0)  # [F, k]
        gw = self.D[layer][:, None, :] * raw + self.b[layer][:, None, :] * rsum[..., None]
        gw = gw + self.lam[:, None, None] * theta[..., :-1]
        return torch.cat([gw, rsum[..., None]], dim=-1)

    def curvature(self, z: Float[Tensor, "layers n folds k"], layers: Sequence[int]) -> None:
        """Rebuild the preconditioner of ``layers`` from their logits ``z`` (every layer).

        The matrix is the folds' mean lumped Hessian in the layer's ``u`` coordinates, plus
        their mean ridge (on the intercept too, which only keeps it safely factorable).
        """
        k, d1 = self.shape[2:]
        eye = torch.eye(d1, dtype=torch.float64)
        for layer in layers:
            if k == 1:
                p = torch.sigmoid(z[layer, ..., 0])
                s = p * (1 - p)
            else:
                s = (1 - torch.softmax(z[layer], dim=-1).square().sum(-1)) / (k - 1)
            omega = (s * self.weights).mean(1)  # [n]
            ridge = float(self.lam.mean())
            keep = (omega * d1 > _KEEP * ridge).nonzero()[:, 0]
            gram = torch.zeros(d1, d1, dtype=torch.float64)
            for rows in row_blocks(len(keep), d1):
                idx = keep[rows]
                root = omega[idx].sqrt().to(torch.float32)[:, None]
                za = torch.cat([self.u32[layer, idx] * root, root], dim=1)
                gram += (za.T @ za).to(torch.float64)
            self.inverse[layer] = _spd_inverse(gram, ridge * eye).to(self.inverse.dtype)

    def precondition(
        self, g: Float[Tensor, "layers folds k d1"], layers: Sequence[int]
    ) -> Float[Tensor, "layers folds k d1"]:
        """Apply each fold's preconditioner: ``T^-T inverse T^-1 g`` with ``z = T u``."""
        out = []
        for i, layer in enumerate(layers):
            F, k, d1 = g[i].shape
            inv_d = 1.0 / self.D[layer][:, None, :]  # [F, 1, d]
            shift = self.b[layer][:, None, :] * inv_d
            gw, gb = g[i][..., :-1], g[i][..., -1:]
            q = torch.cat([gw * inv_d - shift * gb, gb], dim=-1)
            inv = self.inverse[layer]
            r = (q.view(F * k, d1).to(inv.dtype) @ inv).to(torch.float64).view(F, k, d1)
            rw = r[..., :-1]
            out.append(torch.cat([rw * inv_d, r[..., -1:] - (shift * rw).sum(-1, True)], dim=-1))
        return torch.stack(out)


def _spd_inverse(gram: Float[Tensor, "d d"], ridge: Float[Tensor, "d d"]) -> Float[Tensor, "d d"]:
    """Inverse of ``gram + ridge`` (positive semi-definite plus a diagonal ridge), with more
    ridge where float32 rounding made the matrix indefinite."""
    chol, info = torch.linalg.cholesky_ex(gram + ridge)
    jitter = 1.0
    while int(info) != 0:
        jitter *= 10
        chol, info = torch.linalg.cholesky_ex(gram + jitter * ridge)
    return torch.cholesky_inverse(chol)


@dataclass
class _History:
    """L-BFGS memory of every problem: a ring of (s, y) pairs; unused slots have rho = 0."""

    S: Tensor  # [m, P, D]
    Y: Tensor  # [m, P, D]
    rho: Tensor  # [m, P]
    gamma: Tensor  # [P]: scale of the preconditioned initial inverse Hessian
    slot: int = 0

    @classmethod
    def empty(cls, P: int, D: int) -> _History:
        zeros = torch.zeros(_HISTORY, P, D, dtype=torch.float64)
        rho = torch.zeros(_HISTORY, P, dtype=torch.float64)
        return cls(zeros, zeros.clone(), rho, torch.ones(P, dtype=torch.float64))

    def direction(self, g: Tensor, precondition: Callable[[Tensor], Tensor]) -> Tensor:
        """Two-loop recursion: minus the approximate inverse Hessian times ``g`` [P, D]."""
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

    def push(self, s: Tensor, y: Tensor, hy: Tensor) -> None:
        """Store the pairs whose curvature is positive (the others get an empty slot) and
        rescale by ``s.y / y.H0 y`` (``hy`` is ``H0 y``)."""
        sy = (s * y).sum(1)
        ok = sy > 1e-12 * y.norm(dim=1) * s.norm(dim=1)
        self.S[self.slot] = torch.where(ok[:, None], s, 0.0)
        self.Y[self.slot] = torch.where(ok[:, None], y, 0.0)
        self.rho[self.slot] = torch.where(ok, 1.0 / sy.where(ok, torch.ones_like(sy)), 0.0)
        yhy = (y * hy).sum(1)
        ok = ok & (yhy > 0)
        self.gamma = torch.where(ok, sy / yhy.where(ok, torch.ones_like(yhy)), self.gamma)
        self.slot = (self.slot + 1) % _HISTORY


def _line_search(
    problems: Problems,
    z: Float[Tensor, "layers n folds k"],
    zd: Float[Tensor, "layers n folds k"],
    theta: Float[Tensor, "layers folds k d1"],
    direction: Float[Tensor, "layers folds k d1"],
    f: Float[Tensor, "layers folds"],
    slope: Float[Tensor, "layers folds"],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-problem Armijo backtracking from a unit step; returns step, f, residuals, failures.

    The logits are linear in the step (``z + step * zd``), so a trial costs no row products.
    """
    pending = slope < 0
    step = pending.to(f.dtype)
    f_new, resid_new = f.clone(), torch.zeros_like(z)
    for _ in range(_MAX_BACKTRACKS):
        loss, resid = problems.loss(z + step[:, None, :, None] * zd)
        trial = loss + problems.penalty(theta + step[..., None, None] * direction)
        ok = pending & (trial <= f + _ARMIJO_C1 * step * slope)
        f_new = torch.where(ok, trial, f_new)
        resid_new = torch.where(ok[:, None, :, None], resid, resid_new)
        pending &= ~ok
        if not bool(pending.any()):
            break
        # Safeguarded minimiser of the quadratic through f, slope and the trial value.
        curvature = (trial - f - step * slope).clamp_min(1e-300)
        shrunk = (-slope * step.square() / (2 * curvature)).clamp(0.1 * step, 0.5 * step)
        step = torch.where(pending, shrunk, step)
    return torch.where(pending, 0.0, step), f_new, resid_new, pending


def solve(
    problems: Problems, max_iter: int, tol: float
) -> tuple[
    Float[Tensor, "layers folds k d1"],
    Int[Tensor, "layers folds"],
    Float[Tensor, "layers folds"],
    Bool[Tensor, "layers folds"],
]:
    """Minimise every problem: returns theta, iterations, max |gradient| and convergence.

    A problem stops when its max |gradient| <= tol, or (as scipy's L-BFGS-B with
    scikit-learn's ftol = 64 eps) when it makes no more progress. A layer iterates on float32
    row products until every one of its problems has stopped, then recomputes its logits,
    objective and gradient in float64 and carries on there, so the tests are float64's.
    """
    shape = problems.shape
    L, F, k, _ = shape
    P, D = L * F, math.prod(shape[2:])
    n = problems.weights.shape[0]
    exact = [not MIXED] * L
    theta = torch.zeros(shape, dtype=torch.float64)
    z = torch.zeros(L, n, F, k, dtype=torch.float64)  # logits, updated along every step
    every = list(range(L))
    problems.curvature(z, every)  # the Hessian at zero
    value, resid = problems.loss(z)
    f = value + problems.penalty(theta)
    g = torch.stack([problems.gradient(theta[i], resid[i], i, exact[i]) for i in every])
    memory = _History.empty(P, D)
    n_iter = torch.zeros(L, F, dtype=torch.long)
    stuck = torch.zeros(L, F, dtype=torch.bool)

    def gnorm(t: Tensor) -> Tensor:
        return t.abs().amax((-1, -2))

    def in_float64(layers: list[int]) -> None:
        """Recompute the layers' logits, objective and gradient exactly; go on in float64."""
        at = torch.tensor(layers)
        for layer in layers:
            exact[layer] = True
            z[layer] = problems.logits(theta[layer], layer, exact=True)
        value, resid = problems.loss(z[at])
        f[at] = value + problems.penalty(theta[at])
        for i, layer in enumerate(layers):
            g[layer] = problems.gradient(theta[layer], resid[i], layer, exact=True)
        stuck[at] = False

    for it in range(max_iter + 1):
        stopped = stuck | (gnorm(g) <= tol)
        handover = [layer for layer in every if not exact[layer] and bool(stopped[layer].all())]
        if handover:
            in_float64(handover)
            stopped = stuck | (gnorm(g) <= tol)
        active = ~stopped
        if not bool(active.any()) or it == max_iter:
            break
        running = active.any(1).nonzero()[:, 0].tolist()
        at = torch.tensor(running)
        if it in REFRESH_AT:
            problems.curvature(z, running)
            memory.forget(active.view(P))

        def precondition(t: Tensor, at: Tensor = at, running: list[int] = running) -> Tensor:
            out = t.clone().view(shape)
            out[at] = problems.precondition(out[at], running)
            return out.view(P, D)

        flat_g, flat_active = g.view(P, D), active.view(P)
        direction = memory.direction(flat_g, precondition)
        lost = flat_active & ~((flat_g * direction).sum(1) < 0)
        if bool(lost.any()):  # not a descent direction: restart those problems
            memory.forget(lost)
            direction[lost] = -precondition(flat_g)[lost]
        direction[~flat_active] = 0.0
        direction = direction.view(shape)
        slope = (g * direction).sum((-1, -2))
        zd = torch.stack([problems.logits(direction[i], i, exact[i]) for i in running])
        step, f_run, resid, failed = _line_search(
            problems, z[at], zd, theta[at], direction[at], f[at], slope[at]
        )
        s = torch.zeros_like(theta)
        s[at] = step[..., None, None] * direction[at]
        theta = theta + s
        z[at] += step[:, None, :, None] * zd
        f_new, g_new = f.clone(), g.clone()
        f_new[at] = f_run
        for i, layer in enumerate(running):
            moved = step[i] > 0
            if bool(moved.any()):
                fresh = problems.gradient(theta[layer], resid[i], layer, exact[layer])
                g_new[layer] = torch.where(moved[:, None, None], fresh, g[layer])
        y = (g_new - g).view(P, D)
        memory.push(s.view(P, D), y, precondition(y) if GAMMA else y)
        flat = (f - f_new) <= _FTOL * torch.maximum(f.abs(), f_new.abs()).clamp_min(1.0)
        stuck[at] |= active[at] & (failed | flat[at])
        f, g = f_new, g_new
        n_iter += active.long()
    if not all(exact):  # out of iterations: report the float64 gradient
        in_float64([layer for layer in every if not exact[layer]])
    grad_norm = gnorm(g)
    return theta, n_iter, grad_norm, (grad_norm <= tol) | stuck
