"""Curvature preconditioners of the batched logistic solver, one inverse matrix per problem.

A problem's matrix is its Hessian with each row's softmax curvature lumped to one weight,
``sum_i w_i s_i z_i z_i^T + lam I`` over the augmented standardised rows ``z_i = [x_i, 1]``
(the exact Hessian of a binary problem; for softmax ones, times the folds' mean class
coupling). At zero one matrix per layer serves all its folds; a few iterations in, every fold
gets its own from its own training rows. Folds with the same labels share their rows' weights,
so the Gram matrices of a K-fold split cost one pass over the rows. Inverses are float32: only
the path of the optimiser depends on them, never its minimiser.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from probes.probing.objective import Problems, logsumexp, row_blocks

_KEEP = 1e-3  # rows whose curvature is below this fraction of the ridge skip the Gram matrix


class Preconditioner:
    """The preconditioner of every problem of ``problems``: the layer's shared matrix, or the
    fold's own once :meth:`per_fold` has built it, times the class coupling."""

    def __init__(self, problems: Problems) -> None:
        L, F, k, d1 = problems.shape
        n = problems.weights.shape[0]
        self.problems = problems
        self.shape = problems.shape
        self.inverse = torch.empty(L, d1, d1, dtype=torch.float32)  # shared by the folds
        self.fold_inverse: Tensor | None = None  # [L, F, d+1, d+1] once a layer has its own
        self.own = [False] * L  # which layers use fold_inverse
        self.row_weight = torch.zeros(L, n, F, dtype=torch.float64)  # the Gram's row weights
        self.ridge = torch.zeros(L, F, dtype=torch.float64)  # and its ridge, per problem
        eye_k = torch.eye(k, dtype=torch.float64)
        self.mixing = eye_k.expand(L, F, k, k).clone()  # class coupling, per problem
        self.mixing_inv = self.mixing.clone()

    def _gram(self, layer: int, omega: Tensor, rows: Tensor) -> Tensor:
        """``sum omega_i [u_i, 1][u_i, 1]^T`` over ``rows`` whose weight is above the cut-off
        (float32 products, float64 sums, in row blocks)."""
        d1 = self.shape[3]
        gram = torch.zeros(d1, d1, dtype=torch.float64)
        for block in row_blocks(len(rows), d1):
            idx = rows[block]
            root = omega[idx].sqrt().to(torch.float32)[:, None]
            gram += _syrk(torch.cat([self.problems.u32[layer, idx] * root, root], dim=1))
        return gram

    def shared(self, z: Float[Tensor, "layers n folds k"], layers: Sequence[int]) -> None:
        """Build one preconditioner per layer from its logits ``z`` (all layers), shared by
        its folds: their mean lumped Hessian in the layer's ``u`` coordinates plus their mean
        ridge (on the intercept too, which only keeps it safely factorable). Used at zero,
        where every row has the same curvature, and where folds' matrices would cost more
        than they save (more features than training rows)."""
        d1 = self.shape[3]
        eye = torch.eye(d1, dtype=torch.float64)
        ridge = float(self.problems.lam.mean())
        for layer in layers:
            omega = (self.problems.lumped(z[layer]) * self.problems.weights).mean(1)  # [n]
            rows = (omega * d1 > _KEEP * ridge).nonzero()[:, 0]
            gram = self._gram(layer, omega, rows)
            self.row_weight[layer] = 0.0
            self.row_weight[layer, rows] = omega[rows, None]
            self.ridge[layer] = ridge
            self.inverse[layer] = _spd_inverse(gram[None], ridge * eye)[0]
            self.own[layer] = False

    def per_fold(self, z: Float[Tensor, "layers n folds k"], layers: Sequence[int]) -> None:
        """Give every fold of ``layers`` its own preconditioner: its lumped Hessian over its
        own training rows, mapped exactly into its standardisation, plus its ridge.

        The rows' curvature weights are shared by the folds with the same labels (their mean
        over those folds), so the Gram matrices of a K-fold split cost one pass over the rows:
        one per group of rows with the same folds, summed per fold.
        """
        L, F, _, d1 = self.shape
        d = d1 - 1
        pb = self.problems
        if self.fold_inverse is None:
            self.fold_inverse = torch.empty(L, F, d1, d1, dtype=torch.float32)
        for layer in layers:
            s = pb.lumped(z[layer]) * pb.masks  # [n, F]
            grams = torch.empty(F, d1, d1, dtype=torch.float64)
            for group in pb.label_group.unique().tolist():
                folds = (pb.label_group == group).nonzero()[:, 0]
                member = pb.masks[:, folds]  # [n, G]
                count = member.sum(1)
                omega = s[:, folds].sum(1) / count.clamp_min(1)  # [n]
                cut = _KEEP * float(pb.lam[folds].min()) * float(pb.n_train[folds].max())
                used = (omega * d1 > cut) & (count > 0)
                patterns, which = torch.unique(member[used], dim=0, return_inverse=True)
                kept = omega * used
                self.row_weight[layer][:, folds] = kept[:, None] * member / pb.n_train[folds]
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
            grams /= pb.n_train[:, None, None]
            # Into each fold's coordinates z = D u + b: G_z = T G_u T^T, T = [[D, b], [0, 1]].
            # With e = D c + s0 b / 2 the weight block is D A D + b e^T + e b^T.
            D, b = pb.D[layer], pb.b[layer]  # [F, d]
            c, s0 = grams[:, :d, d].clone(), grams[:, d, d].clone()
            e = D * c + 0.5 * s0[:, None] * b
            out = grams
            out[:, :d, :d] *= D[:, :, None]
            out[:, :d, :d] *= D[:, None, :]
            out[:, :d, :d] += torch.bmm(torch.stack([b, e], dim=2), torch.stack([e, b], dim=1))
            out[:, :d, d] = e + 0.5 * s0[:, None] * b
            out[:, d, :d] = out[:, :d, d]
            ridge = pb.lam[:, None, None] * torch.eye(d1, dtype=torch.float64)
            self.fold_inverse[layer] = _spd_inverse(out, ridge)
            if self.shape[2] > 1:
                self._class_mixing(z[layer], s, layer)
            self.ridge[layer] = pb.lam
            self.own[layer] = True

    def _class_mixing(self, z: Tensor, s: Tensor, layer: int) -> None:
        """The softmax curvature's class structure, averaged over each fold's rows:
        ``sum_i w_i (diag p_i - p_i p_i^T) / sum_i w_i s_i``, so that the preconditioner is
        its Kronecker product with the lumped Gram matrix (the all-ones direction, which the
        loss ignores, keeps scale one)."""
        p = torch.exp(z - logsumexp(z)[..., None])  # [n, F, k]
        w = self.problems.weights  # [n, F]
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

    def apply(
        self, g: Float[Tensor, "layers folds k d1"], layers: Sequence[int]
    ) -> Float[Tensor, "layers folds k d1"]:
        """Apply each fold's preconditioner: its own inverse, or the layer's shared one as
        ``T^-T inverse T^-1 g`` with ``z = T u``."""
        out = []
        for i, layer in enumerate(layers):
            F, k, d1 = g[i].shape
            if self.own[layer]:
                assert self.fold_inverse is not None
                inv = self.fold_inverse[layer]
                mixed = torch.matmul(self.mixing_inv[layer], g[i]) if k > 1 else g[i]
                out.append(torch.bmm(mixed.to(torch.float32), inv).to(torch.float64))
                continue
            inv_d = 1.0 / self.problems.D[layer][:, None, :]  # [F, 1, d]
            shift = self.problems.b[layer][:, None, :] * inv_d
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


def _spd_inverse(
    gram: Float[Tensor, "batch d d"], ridge: Float[Tensor, "*batch d d"]
) -> Float[Tensor, "batch d d"]:
    """Inverses of ``gram + ridge`` (positive semi-definite plus a diagonal ridge), with more
    ridge where float32 rounding made a matrix indefinite."""
    ridge = ridge.expand_as(gram)
    # Only the optimisation path depends on the preconditioner, so it is factored in float32;
    # a matrix float32 cannot factor is factored in float64, with more ridge if need be.
    chol, info = torch.linalg.cholesky_ex((gram + ridge).to(torch.float32))
    jitter = 1.0
    while bool((info != 0).any()):
        bad = (info != 0).nonzero()[:, 0]
        wide, info[bad] = torch.linalg.cholesky_ex(gram[bad] + jitter * ridge[bad])
        chol[bad] = wide.to(torch.float32)
        jitter *= 10
    return torch.cholesky_inverse(chol)
