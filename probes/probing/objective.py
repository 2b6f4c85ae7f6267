"""The objective of a batch of L2 logistic regressions: one per (layer, fold), on shared rows.

Rows are centred and scaled once per layer and kept in float32; each fold's standardisation is
an exact affine map of them, so the objective is scikit-learn's (mean loss + ``lam/2 ||w||^2``
on the fold's standardised training rows, intercept free) to float64 rounding, while row
products run in float32 until a layer's last iterations (``exact``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

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
    """Objective and gradient of every (layer, fold) problem of a chunk of layers.

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
        self.masks = weights.T > 0  # [n, F]
        self.n_train = (weights > 0).sum(1).to(torch.float64)  # [F]
        _, self.label_group = torch.unique(targets, dim=0, return_inverse=True)  # same labels

    def rows64(self, layer: int, rows: slice) -> Float[Tensor, "rows d"]:
        """A block of the layer's centred and scaled rows in float64, rebuilt when needed
        (only a layer's last iterations use them, so they are not kept)."""
        x = self.X[layer, rows].to(torch.float64)
        return (x - self.centre[layer]) / self.spread[layer]

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
                for rows in row_blocks(n, d1):
                    z[i, rows] = self.rows64(layer, rows) @ v[i].T
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
        lse = logsumexp(z)
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
            lse = logsumexp(z) if lse is None else lse
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
        raw = torch.zeros(R, F * k, d1 - 1, dtype=torch.float64)
        for i, layer in enumerate(layers):
            if exact[i]:
                for rows in row_blocks(flat.shape[1], d1):
                    raw[i] += flat[i, rows].T @ self.rows64(layer, rows)
            else:
                raw[i] = flat32[i].T @ self.u32[layer]
        rsum = resid.sum(1)  # [R, F, k]
        gw = self.D[layers][:, :, None, :] * raw.view(R, F, k, d1 - 1)
        gw += self.b[layers][:, :, None, :] * rsum[..., None]
        gw += self.lam[:, None, None] * theta[..., :-1]
        return torch.cat([gw, rsum[..., None]], dim=-1)

    def lumped(self, z: Float[Tensor, "n folds k"]) -> Float[Tensor, "n folds"]:
        """Each row's softmax curvature lumped to one number: ``p (1 - p)`` for binary
        problems, ``(1 - |p|^2) / (k - 1)`` (the mean over the k - 1 free directions) else."""
        if z.shape[-1] == 1:
            p = torch.sigmoid(z[..., 0])
            return p * (1 - p)
        p = torch.exp(z - logsumexp(z)[..., None])
        return (1 - p.square().sum(-1)) / (z.shape[-1] - 1)


def logsumexp(z: Float[Tensor, "*batch k"]) -> Float[Tensor, " *batch"]:
    """``logsumexp`` over a short last axis (torch's own is slow over a few classes)."""
    top = z.amax(-1, keepdim=True)
    return (z - top).exp_().sum(-1).log_() + top[..., 0]
