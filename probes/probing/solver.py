"""The batched optimiser behind ``fit_logistic_batched``: many L2 logistic regressions at once.

Every (layer, fold) problem keeps its own L-BFGS memory, step scale and Armijo line search, so
problems do not slow each other down; they share the passes over their layer's rows. What
makes it converge in a few dozen iterations on badly conditioned residual-stream activations,
where plain L-BFGS takes hundreds, and keeps those iterations cheap:

- Curvature preconditioning. The initial inverse Hessian of L-BFGS is the inverse of a
  problem's Hessian with each row's softmax curvature lumped to one weight,
  ``sum_i w_i s_i z_i z_i^T + lam I`` over the augmented standardised rows ``z_i = [x_i, 1]``
  (``s_i = p_i (1 - p_i)`` for binary problems, which makes it their exact Hessian, and
  ``(1 - |p_i|^2) / (k - 1)`` for softmax ones, times the folds' mean class coupling). It is
  first the Hessian at zero, one per layer for all its folds, and is rebuilt once, a few
  iterations in, for every fold from its own training rows, when the probabilities say which
  rows are still uncertain: that second matrix is what removes the long tail of plain
  L-BFGS. The folds of a K-fold split share their rows' curvature weights, so their Gram
  matrices cost one pass over the rows; each matrix is mapped exactly into its fold's own
  standardisation. The step-based scale ``s.M s / s.y`` needs no extra product with it.
- Mixed precision. Rows are centred and scaled by their layer's statistics once, so float32
  products lose nothing that matters: iterations use the float32 copy, and each layer then
  recomputes its logits, objective and gradient on the float64 copy and finishes there, so
  the stopping test is float64's. The logits are carried along the steps (``z + t d``), so
  line-search trials need no row products.
- Evaluating only what moves: a pass covers only the layers with a problem still running, and
  a repeated trial only the layers with a problem still searching.

None of this changes the problem or its minimiser: every problem stops when the max absolute
gradient of its float64 mean-scaled objective is at most ``tol``, as scikit-learn's lbfgs.
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
_REFRESH_AT = 6  # the iteration at which every fold gets its own curvature preconditioner
_KEEP = 1e-3  # rows whose curvature is below this fraction of the ridge skip the Gram matrix
ROW_BLOCK_BYTES = 64 * 2**20  # float64 bytes per block of the statistics passes


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
    and the intercept. The rows are kept once per layer in float32, centred and scaled by the
    layer's statistics (``u``); a fold's standardised row is ``D * u + b`` with per-fold
    ``D`` and ``b``.
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
        self.X = X
        self.centre = torch.empty(L, d, dtype=torch.float64)
        self.spread = torch.empty(L, d, dtype=torch.float64)
        self.u32 = torch.empty(L, n, d, dtype=torch.float32)
        self.D = torch.empty(L, F, d, dtype=torch.float64)
        self.b = torch.empty(L, F, d, dtype=torch.float64)
        for layer in range(L):
            centre, spread = _layer_stats(X[layer])
            self.centre[layer], self.spread[layer] = centre, spread
            for rows in row_blocks(n, d):
                self.u32[layer, rows] = (X[layer, rows].to(torch.float64) - centre) / spread
            self.D[layer] = spread / scale[layer]
            self.b[layer] = (centre - mean[layer]) / scale[layer]
        self.inverse = torch.empty(L, d + 1, d + 1, dtype=torch.float32)  # shared by the folds
        self.fold_inverse: Tensor | None = None  # [L, F, d+1, d+1] once a layer has its own
        self.per_fold = [False] * L
        self.row_weight = torch.zeros(L, n, F, dtype=torch.float64)  # the Gram's row weights
        eye_k = torch.eye(n_out, dtype=torch.float64)
        self.mixing = eye_k.expand(L, F, n_out, n_out).clone()  # class coupling, per problem
        self.mixing_inv = self.mixing.clone()
        self.ridge = torch.zeros(L, F, dtype=torch.float64)  # and its ridge, per problem
        self.masks = weights.T > 0  # [n, F]
        self.n_train = (weights > 0).sum(1).to(torch.float64)  # [F]
        # Folds with the same labels share the curvature weights of their rows.
        _, self.label_group = torch.unique(targets, dim=0, return_inverse=True)

    def rows64(self, layer: int) -> Float[Tensor, "n d"]:
        """The layer's centred and scaled rows in float64, rebuilt when needed (only the
        last iterations of a layer use them, so they are not kept)."""
        return (self.X[layer].to(torch.float64) - self.centre[layer]) / self.spread[layer]

    def logits(
        self,
        theta: Float[Tensor, "layers folds k d1"],
        layers: Sequence[int],
        exact: Sequence[bool],
    ) -> Float[Tensor, "layers n folds k"]:
        """Logits of the problems of ``layers`` on every row (a linear map of ``theta``),
        with each layer's float32 or float64 rows."""
        R, F, k, d1 = theta.shape
        w = theta[..., :-1]
        v = (w * self.D[layers][:, :, None, :]).reshape(R, F * k, d1 - 1)  # weights on u
        offset = theta[..., -1] + (w * self.b[layers][:, :, None, :]).sum(-1)  # [R, F, k]
        n = self.u32.shape[1]
        z = torch.empty(R, n, F * k, dtype=torch.float64)
        v32 = v.to(torch.float32) if not all(exact) else v
        for i, layer in enumerate(layers):
            if exact[i]:
                torch.matmul(self.rows64(layer), v[i].T, out=z[i])
            else:
                z[i] = self.u32[layer] @ v32[i].T
        return z.view(R, n, F, k) + offset[:, None]

    def labelled(self, z: Float[Tensor, "layers n folds k"]) -> Float[Tensor, "layers folds"]:
        """Weighted sum of each training row's logit of its own class (binary: ``y z``)."""
        if z.shape[-1] == 1:
            return (z[..., 0] * self.labels * self.weights).sum(1)
        return (z * self.labels).sum(-1).mul_(self.weights).sum(1)

    def partition(
        self, z: Float[Tensor, "layers n folds k"]
    ) -> tuple[Float[Tensor, "layers folds"], Float[Tensor, "layers n folds"]]:
        """Weighted sum of each row's log partition function (``softplus(z)`` for binary
        problems, ``logsumexp(z)`` else), and the latter per row (binary: ``z`` itself)."""
        if z.shape[-1] == 1:
            return (torch.nn.functional.softplus(z[..., 0]) * self.weights).sum(1), z[..., 0]
        lse = _logsumexp(z)
        return (lse * self.weights).sum(1), lse

    def loss(self, z: Float[Tensor, "layers n folds k"]) -> Float[Tensor, "layers folds"]:
        """Mean training loss per problem."""
        return self.partition(z)[0] - self.labelled(z)

    def residuals(
        self, z: Float[Tensor, "layers n folds k"], lse: Tensor | None = None
    ) -> Float[Tensor, "layers n folds k"]:
        """Gradient of the mean training loss in the logits (weighted rows); ``lse`` is the
        log partition function from :meth:`partition`, if at hand."""
        if z.shape[-1] == 1:
            resid = (torch.sigmoid(z[..., 0]) - self.labels)[..., None]
        else:
            lse = _logsumexp(z) if lse is None else lse
            resid = torch.exp(z - lse[..., None]) - self.labels
        return resid.mul_(self.weights[..., None])

    def penalty(self, theta: Float[Tensor, "layers folds k d1"]) -> Float[Tensor, "layers folds"]:
        """The L2 penalty ``lam/2 ||w||^2`` (the intercept is free)."""
        return 0.5 * self.lam * theta[..., :-1].square().sum((-1, -2))

    def gradient(
        self,
        theta: Float[Tensor, "layers folds k d1"],
        resid: Float[Tensor, "layers n folds k"],
        layers: Sequence[int],
        exact: Sequence[bool],
    ) -> Float[Tensor, "layers folds k d1"]:
        """Gradient of the objectives of ``layers`` from their weighted logit residuals."""
        R, F, k, d1 = theta.shape
        flat = resid.view(R, -1, F * k)
        flat32 = flat.to(torch.float32) if not all(exact) else flat
        raw = torch.empty(R, F * k, d1 - 1, dtype=torch.float64)
        for i, layer in enumerate(layers):
            if exact[i]:
                torch.matmul(flat[i].T, self.rows64(layer), out=raw[i])
            else:
                raw[i] = flat32[i].T @ self.u32[layer]
        rsum = resid.sum(1)  # [R, F, k]
        gw = self.D[layers][:, :, None, :] * raw.view(R, F, k, d1 - 1)
        gw += self.b[layers][:, :, None, :] * rsum[..., None]
        gw += self.lam[:, None, None] * theta[..., :-1]
        return torch.cat([gw, rsum[..., None]], dim=-1)

    def _lumped(self, z: Float[Tensor, "n folds k"]) -> Float[Tensor, "n folds"]:
        """Each row's softmax curvature lumped to one number: ``p (1 - p)`` for binary
        problems, ``(1 - |p|^2) / (k - 1)`` (the mean over the k - 1 free directions) else."""
        if z.shape[-1] == 1:
            p = torch.sigmoid(z[..., 0])
            return p * (1 - p)
        p = torch.exp(z - _logsumexp(z)[..., None])
        return (1 - p.square().sum(-1)) / (z.shape[-1] - 1)

    def _gram(self, layer: int, omega: Tensor, rows: Tensor) -> Tensor:
        """``sum omega_i [u_i, 1][u_i, 1]^T`` over ``rows`` whose weight is above the cut-off
        (float32 products, float64 sums, in row blocks)."""
        d1 = self.shape[3]
        gram = torch.zeros(d1, d1, dtype=torch.float64)
        for block in row_blocks(len(rows), d1):
            idx = rows[block]
            root = omega[idx].sqrt().to(torch.float32)[:, None]
            gram += _syrk(torch.cat([self.u32[layer, idx] * root, root], dim=1))
        return gram

    def shared_curvature(self, z: Float[Tensor, "layers n folds k"], layers: Sequence[int]) -> None:
        """Build one preconditioner per layer from its logits ``z`` (all layers), shared by
        its folds: their mean lumped Hessian in the layer's ``u`` coordinates plus their mean
        ridge (on the intercept too, which only keeps it safely factorable). Used at zero,
        where every row has the same curvature, and where folds' matrices would cost more
        than they save (more features than training rows)."""
        d1 = self.shape[3]
        eye = torch.eye(d1, dtype=torch.float64)
        ridge = float(self.lam.mean())
        for layer in layers:
            omega = (self._lumped(z[layer]) * self.weights).mean(1)  # [n]
            rows = (omega * d1 > _KEEP * ridge).nonzero()[:, 0]
            gram = self._gram(layer, omega, rows)
            self.row_weight[layer] = 0.0
            self.row_weight[layer, rows] = omega[rows, None]
            self.ridge[layer] = ridge
            self.inverse[layer] = _spd_inverse(gram[None], ridge * eye)[0]
            self.per_fold[layer] = False

    def fold_curvature(self, z: Float[Tensor, "layers n folds k"], layers: Sequence[int]) -> None:
        """Give every fold of ``layers`` its own preconditioner: its lumped Hessian over its
        own training rows, mapped exactly into its standardisation, plus its ridge.

        The rows' curvature weights are shared by the folds with the same labels (their mean
        over those folds), so the Gram matrices of a K-fold split cost one pass over the rows:
        one per group of rows with the same folds, summed per fold.
        """
        L, F, _, d1 = self.shape
        d = d1 - 1
        if self.fold_inverse is None:
            self.fold_inverse = torch.empty(L, F, d1, d1, dtype=torch.float32)
        for layer in layers:
            s = self._lumped(z[layer]) * self.masks  # [n, F]
            grams = torch.empty(F, d1, d1, dtype=torch.float64)
            for group in self.label_group.unique().tolist():
                folds = (self.label_group == group).nonzero()[:, 0]
                member = self.masks[:, folds]  # [n, G]
                count = member.sum(1)
                omega = s[:, folds].sum(1) / count.clamp_min(1)  # [n]
                cut = _KEEP * float(self.lam[folds].min()) * float(self.n_train[folds].max())
                used = (omega * d1 > cut) & (count > 0)
                patterns, which = torch.unique(member[used], dim=0, return_inverse=True)
                kept = omega * used
                self.row_weight[layer][:, folds] = kept[:, None] * member / self.n_train[folds]
                rows = used.nonzero()[:, 0]
                if len(patterns) <= len(folds) + 1:  # e.g. K-fold: one group per held-out fold
                    parts = [
                        self._gram(layer, omega, rows[which == p]) for p in range(len(patterns))
                    ]
                    stacked = torch.stack(parts).view(len(parts), d1 * d1)
                    grams[folds] = (patterns.T.to(torch.float64) @ stacked).view(-1, d1, d1)
                else:
                    for j, fold in enumerate(folds.tolist()):
                        grams[fold] = self._gram(layer, omega, rows[member[rows, j]])
            grams /= self.n_train[:, None, None]
            # Into each fold's coordinates z = D u + b: G_z = T G_u T^T, T = [[D, b], [0, 1]].
            # With e = D c + s0 b / 2 the weight block is D A D + b e^T + e b^T.
            D, b = self.D[layer], self.b[layer]  # [F, d]
            c, s0 = grams[:, :d, d].clone(), grams[:, d, d].clone()
            e = D * c + 0.5 * s0[:, None] * b
            out = grams
            out[:, :d, :d] *= D[:, :, None]
            out[:, :d, :d] *= D[:, None, :]
            out[:, :d, :d] += torch.bmm(torch.stack([b, e], dim=2), torch.stack([e, b], dim=1))
            out[:, :d, d] = e + 0.5 * s0[:, None] * b
            out[:, d, :d] = out[:, :d, d]
            ridge = self.lam[:, None, None] * torch.eye(d1, dtype=torch.float64)
            self.fold_inverse[layer] = _spd_inverse(out, ridge)
            if self.shape[2] > 1:
                self._class_mixing(z[layer], s, layer)
            self.ridge[layer] = self.lam
            self.per_fold[layer] = True

    def _class_mixing(self, z: Tensor, s: Tensor, layer: int) -> None:
        """The softmax curvature's class structure, averaged over each fold's rows:
        ``sum_i w_i (diag p_i - p_i p_i^T) / sum_i w_i s_i``, so that the preconditioner is
        its Kronecker product with the lumped Gram matrix (the all-ones direction, which the
        loss ignores, keeps scale one)."""
        p = torch.exp(z - _logsumexp(z)[..., None])  # [n, F, k]
        w = self.weights  # [n, F]
        A = torch.diag_embed(torch.einsum("nf,nfk->fk", w, p)) - torch.einsum(
            "nf,nfk,nfj->fkj", w, p, p
        )
        A = A / (w * s).sum(0).clamp_min(1e-300)[:, None, None]
        mu, Q = torch.linalg.eigh(A)
        mu = torch.where(mu > 1e-3 * mu.amax(-1, keepdim=True), mu, torch.ones_like(mu))
        self.mixing[layer] = Q @ torch.diag_embed(mu) @ Q.mT
        self.mixing_inv[layer] = Q @ torch.diag_embed(1.0 / mu) @ Q.mT

    def quadratic(
        self,
        zd: Float[Tensor, "layers n folds k"],
        direction: Float[Tensor, "layers folds k d1"],
        layers: Tensor | slice,
    ) -> Float[Tensor, "layers folds"]:
        """``d^T M d`` of each problem's preconditioner matrix ``M`` (not its inverse) along
        ``direction``, whose logits are ``zd``: no row products needed."""
        mix = self.mixing[layers]  # [R, F, k, k]
        zm = torch.einsum("rnfk,rfkj->rnfj", zd, mix)
        rows = (self.row_weight[layers][..., None] * zd * zm).sum((1, 3))
        dm = torch.einsum("rfkd,rfkj->rfjd", direction, mix)
        return rows + self.ridge[layers] * (direction * dm).sum((-1, -2))

    def precondition(
        self, g: Float[Tensor, "layers folds k d1"], layers: Sequence[int]
    ) -> Float[Tensor, "layers folds k d1"]:
        """Apply each fold's preconditioner: its own inverse, or the layer's shared one as
        ``T^-T inverse T^-1 g`` with ``z = T u``."""
        out = []
        for i, layer in enumerate(layers):
            F, k, d1 = g[i].shape
            if self.per_fold[layer]:
                assert self.fold_inverse is not None
                inv = self.fold_inverse[layer]
                mixed = torch.matmul(self.mixing_inv[layer], g[i]) if k > 1 else g[i]
                out.append(torch.bmm(mixed.to(torch.float32), inv).to(torch.float64))
                continue
            inv_d = 1.0 / self.D[layer][:, None, :]  # [F, 1, d]
            shift = self.b[layer][:, None, :] * inv_d
            gw, gb = g[i][..., :-1], g[i][..., -1:]
            q = torch.cat([gw * inv_d - shift * gb, gb], dim=-1)
            r = (q.view(F * k, d1).to(torch.float32) @ self.inverse[layer]).to(torch.float64)
            rw = r.view(F, k, d1)[..., :-1]
            tail = r.view(F, k, d1)[..., -1:] - (shift * rw).sum(-1, True)
            out.append(torch.cat([rw * inv_d, tail], dim=-1))
        return torch.stack(out)


def _syrk(rows: Float[Tensor, "n d"]) -> Float[Tensor, "d d"]:
    """``rows^T rows`` in float64 from float32 products, computing the upper half of the
    symmetric result (in two column blocks) and mirroring it."""
    d = rows.shape[1]
    h = d // 2
    top = rows[:, :h].T @ rows  # [h, d]
    bottom = rows[:, h:].T @ rows[:, h:]  # [d - h, d - h]
    out = torch.empty(d, d, dtype=torch.float64)
    out[:h] = top
    out[h:, :h] = top[:, h:].T
    out[h:, h:] = bottom
    return out


def _logsumexp(z: Float[Tensor, "*batch k"]) -> Float[Tensor, " *batch"]:
    """``logsumexp`` over a short last axis (torch's own is slow over a few classes)."""
    top = z.amax(-1, keepdim=True)
    return (z - top).exp_().sum(-1).log_() + top[..., 0]


def _spd_inverse(
    gram: Float[Tensor, "batch d d"], ridge: Float[Tensor, "*batch d d"]
) -> Float[Tensor, "batch d d"]:
    """Inverses of ``gram + ridge`` (positive semi-definite plus a diagonal ridge), with more
    ridge where float32 rounding made a matrix indefinite."""
    ridge = ridge.expand_as(gram)
    chol, info = torch.linalg.cholesky_ex(gram + ridge)
    jitter = 1.0
    while bool((info != 0).any()):
        jitter *= 10
        bad = (info != 0).nonzero()[:, 0]
        chol[bad], info[bad] = torch.linalg.cholesky_ex(gram[bad] + jitter * ridge[bad])
    # The factor is float64 (the matrix may be badly conditioned); its inverse is used in
    # float32 anyway, and float32 rounding of the triangular solves is far below that.
    return torch.cholesky_inverse(chol.to(torch.float32))


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

    def push(self, s: Tensor, y: Tensor, sms: Tensor) -> None:
        """Store the pairs whose curvature is positive (the others get an empty slot) and
        rescale the preconditioner by ``s.M s / s.y`` (``sms``: its matrix along ``s``)."""
        sy = (s * y).sum(1)
        ok = sy > 1e-12 * y.norm(dim=1) * s.norm(dim=1)
        self.S[self.slot] = torch.where(ok[:, None], s, 0.0)
        self.Y[self.slot] = torch.where(ok[:, None], y, 0.0)
        safe = sy.where(ok, torch.ones_like(sy))
        self.rho[self.slot] = torch.where(ok, 1.0 / safe, 0.0)
        self.gamma = torch.where(ok & (sms > 0), sms / safe, self.gamma)
        self.slot = (self.slot + 1) % _HISTORY


def _line_search(
    problems: Problems,
    z: Float[Tensor, "layers n folds k"],
    zd: Float[Tensor, "layers n folds k"],
    theta: Float[Tensor, "layers folds k d1"],
    direction: Float[Tensor, "layers folds k d1"],
    f: Float[Tensor, "layers folds"],
    slope: Float[Tensor, "layers folds"],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-problem Armijo backtracking from a unit step; returns the steps, the objective
    there, the problems that found no step, and the logits and log partition function at
    the steps (for the problems that moved).

    The logits are linear in the step (``z + step * zd``), so a trial costs no row products,
    its labelled term is linear too, and after the first trial only the layers with a
    problem still searching are evaluated.
    """
    pending = slope < 0
    step = pending.to(f.dtype)
    f_new = f.clone()
    base, rate = problems.labelled(z), problems.labelled(zd)
    z_new = torch.empty_like(z)
    lse_new = torch.empty(z.shape[:-1], dtype=z.dtype)
    layers: Tensor | slice = slice(None)
    for _ in range(_MAX_BACKTRACKS):
        at_step = step[layers]
        trial_z = z[layers] + at_step[:, None, :, None] * zd[layers]
        trial, lse = problems.partition(trial_z)
        trial = trial - base[layers] - at_step * rate[layers]
        trial += problems.penalty(theta[layers] + at_step[..., None, None] * direction[layers])
        wait = pending[layers]
        ok = wait & (trial <= f[layers] + _ARMIJO_C1 * at_step * slope[layers])
        f_new[layers] = torch.where(ok, trial, f_new[layers])
        if isinstance(layers, slice):  # the first trial: every layer
            z_new, lse_new = trial_z, lse
        else:
            z_new[layers] = torch.where(ok[:, None, :, None], trial_z, z_new[layers])
            lse_new[layers] = torch.where(ok[:, None, :], lse, lse_new[layers])
        pending[layers] = wait & ~ok
        if not bool(pending.any()):
            break
        # Safeguarded minimiser of the quadratic through f, slope and the trial value.
        curvature = (trial - f[layers] - at_step * slope[layers]).clamp_min(1e-300)
        shrunk = (-slope[layers] * at_step.square() / (2 * curvature)).clamp(
            0.1 * at_step, 0.5 * at_step
        )
        step[layers] = torch.where(pending[layers], shrunk, at_step)
        layers = pending.any(1).nonzero()[:, 0]
    step = torch.where(pending, 0.0, step)
    z_new = torch.where((step > 0)[:, None, :, None], z_new, z)
    return step, f_new, pending, z_new, lse_new


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
    exact = [False] * L  # layers on their float64 rows
    theta = torch.zeros(shape, dtype=torch.float64)
    z = torch.zeros(L, n, F, k, dtype=torch.float64)  # logits, updated along every step
    every = list(range(L))
    problems.shared_curvature(z, every)  # the Hessian at zero
    per_fold = problems.shape[3] <= int(problems.n_train.max())
    f = problems.loss(z) + problems.penalty(theta)
    resid = problems.residuals(z)
    g = problems.gradient(theta, resid, every, exact)
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
        z[at] = problems.logits(theta[at], layers, [True] * len(layers))
        f[at] = problems.loss(z[at]) + problems.penalty(theta[at])
        resid = problems.residuals(z[at])
        g[at] = problems.gradient(theta[at], resid, layers, [True] * len(layers))
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
        at: Tensor | slice = slice(None) if len(running) == L else torch.tensor(running)
        if it == _REFRESH_AT:
            if per_fold:
                problems.fold_curvature(z, running)
            else:
                problems.shared_curvature(z, running)
            memory.forget(active.view(P))

        def precondition(
            t: Tensor, at: Tensor | slice = at, running: list[int] = running
        ) -> Tensor:
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
        flags = [exact[layer] for layer in running]
        zd = problems.logits(direction[at], running, flags)
        step, f_run, failed, z_run, lse = _line_search(
            problems, z[at], zd, theta[at], direction[at], f[at], slope[at]
        )
        s = torch.zeros_like(theta)
        s[at] = step[..., None, None] * direction[at]
        theta = theta + s
        z[at] = z_run
        resid = problems.residuals(z_run, lse)
        f_new, g_new = f.clone(), g.clone()
        f_new[at] = f_run
        fresh = problems.gradient(theta[at], resid, running, flags)
        g_new[at] = torch.where((step > 0)[..., None, None], fresh, g[at])
        y = (g_new - g).view(P, D)
        sms = torch.zeros(L, F, dtype=torch.float64)
        sms[at] = problems.quadratic(zd, direction[at], at) * step.square()
        memory.push(s.view(P, D), y, sms.view(P))
        flat = (f - f_new) <= _FTOL * torch.maximum(f.abs(), f_new.abs()).clamp_min(1.0)
        stuck[at] |= active[at] & (failed | flat[at])
        f, g = f_new, g_new
        n_iter += active.long()
    if not all(exact):  # out of iterations: report the float64 gradient
        in_float64([layer for layer in every if not exact[layer]])
    grad_norm = gnorm(g)
    return theta, n_iter, grad_norm, (grad_norm <= tol) | stuck
