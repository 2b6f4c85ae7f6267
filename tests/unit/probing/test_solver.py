"""The batched solver: it reaches scikit-learn's optimum tightly on badly conditioned data, its
fold preconditioner is the exact Hessian of a binary problem, its curvature refresh is what
cuts the iterations, and its float32 iterations end on a float64-exact gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probes.probing import curvature, linear, objective, solver
from probes.probing.linear import fit_logistic_batched, sklearn_reference_fit


def ill_conditioned(
    n: int, d: int, layers: int, k: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual-stream-like rows: a few huge shared directions, strongly correlated features
    with scales spanning three decades, large offsets, and class signal along weak directions.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    X = np.empty((layers, n, d), np.float32)
    for layer in range(layers):
        basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
        spectrum = np.logspace(2, -1.5, d)  # condition number ~1e7 in the covariance
        centres = rng.normal(size=(k, d)) * 1.5 * (layer + 1) / layers
        x = (rng.normal(size=(n, d)) * spectrum + centres[y] * spectrum[::-1]) @ basis.T
        x = x * np.logspace(0, 3, d)[rng.permutation(d)] + rng.normal(0.0, 100.0, size=d)
        X[layer] = x
    return torch.from_numpy(X), torch.from_numpy(y)


def kfold(n: int, folds: int, seed: int = 0) -> torch.Tensor:
    fold = np.random.default_rng(seed + 7).permutation(n) % folds
    return torch.from_numpy(fold[None, :] != np.arange(folds)[:, None])


def objective_at(fit, X, y, masks, C: float = 1.0) -> np.ndarray:
    """The float64 objective of every (layer, fold) problem at the fitted weights."""
    L, F = fit.n_iter.shape
    out = np.empty((L, F))
    for layer in range(L):
        for fold in range(F):
            rows = masks[fold]
            z = ((X[layer][rows].double() - fit.mean[layer, fold]) / fit.scale[layer, fold]) @ (
                fit.weight[layer, fold].T
            ) + fit.bias[layer, fold]
            labels = y[rows]
            if z.shape[1] == 1:
                loss = torch.nn.functional.softplus(z[:, 0]) - labels * z[:, 0]
            else:
                loss = torch.logsumexp(z, 1) - z.gather(1, labels[:, None])[:, 0]
            penalty = 0.5 * fit.weight[layer, fold].square().sum() / (C * int(rows.sum()))
            out[layer, fold] = float(loss.mean() + penalty)
    return out


def test_badly_conditioned_multiclass_reaches_sklearns_optimum_tightly():
    n, d, k = 480, 40, 4
    X, y = ill_conditioned(n, d, layers=2, k=k)
    masks = kfold(n, 3)
    fit = fit_logistic_batched(X, y, masks, k, tol=1e-8, max_iter=2000)
    assert bool(fit.converged.all()) and float(fit.grad_norm.max()) <= 1e-8
    ref, models = sklearn_reference_fit(
        X, y, masks, k, 1.0, max_iter=100_000, tol=1e-11, return_models=True
    )
    pred = linear.predict_proba_batched(fit, X).argmax(-1).numpy()
    assert (pred == ref).all()
    for layer in range(2):
        for fold in range(3):
            model = models[layer][fold][1]
            weight = fit.weight[layer, fold].numpy()
            error = np.linalg.norm(weight - model.coef_) / np.linalg.norm(model.coef_)
            assert error < 1e-5, (layer, fold, error)
            bias = fit.bias[layer, fold].numpy()
            np.testing.assert_allclose(bias, model.intercept_, atol=1e-5 * (1 + abs(bias).max()))
    # Same objective: ours is not above scikit-learn's at its own optimum.
    ours = objective_at(fit, X, y, masks)
    for layer in range(2):
        for fold in range(3):
            scaler, model = models[layer][fold]
            theirs = fit_like(fit, layer, fold, scaler, model)
            assert ours[layer, fold] <= objective_at(theirs, X, y, masks)[layer, fold] + 1e-12


def fit_like(fit, layer: int, fold: int, scaler, model):
    """A BatchedFit whose (layer, fold) probe is scikit-learn's (the rest are ours)."""
    weight, bias = fit.weight.clone(), fit.bias.clone()
    weight[layer, fold] = torch.from_numpy(model.coef_)
    bias[layer, fold] = torch.from_numpy(model.intercept_)
    np.testing.assert_allclose(fit.mean[layer, fold].numpy(), scaler.mean_, rtol=1e-9)
    return linear.BatchedFit(
        fit.mean, fit.scale, weight, bias, fit.n_classes, fit.n_iter, fit.grad_norm, fit.converged
    )


def test_the_curvature_refresh_is_what_cuts_the_iterations(monkeypatch):
    n, d, k = 480, 80, 4
    X, y = ill_conditioned(n, d, layers=2, k=k, seed=1)
    masks = kfold(n, 3, seed=1)
    fast = fit_logistic_batched(X, y, masks, k)
    monkeypatch.setattr(solver, "_REFRESH_AT", -1)  # only the Hessian at zero, as before
    slow = fit_logistic_batched(X, y, masks, k)
    assert bool(fast.converged.all()) and bool(slow.converged.all())
    assert int(slow.n_iter.min()) > 50
    assert int(fast.n_iter.max()) * 2 < int(slow.n_iter.min())  # 15-23 against 62-134
    error = (fast.weight - slow.weight).norm() / slow.weight.norm()
    assert float(error) < 2e-3  # the same minimiser, to the solvers' tolerance


def problems_of(X, targets, masks, k: int):
    """The solver's problems for one call of fit_logistic_batched, with its statistics."""
    weights = masks.double() / masks.sum(1, keepdim=True)
    mean, scale = linear._standardise_stats(X, weights)
    lam = 1.0 / masks.sum(1).double()
    n_out = 1 if k == 2 else k
    return objective.Problems(X, targets, weights, mean, scale, lam, n_out), mean, scale


@pytest.mark.parametrize(
    ("split", "labels"),
    [("kfold", "own"), ("kfold", "shared"), ("random", "shared")],
)
def test_a_folds_preconditioner_is_its_exact_binary_hessian(split: str, labels: str):
    """Folds with their own labels get their own rows' curvature: the exact Hessian at any
    point. Folds sharing labels share their rows' weights (exact where their curvature
    agrees, as with an intercept-only model), whether the Gram matrices come from one pass
    (K-fold) or fold by fold (arbitrary overlapping folds)."""
    n, d = 240, 6
    X, y = ill_conditioned(n, d, layers=1, k=2, seed=2)
    if split == "kfold":
        masks = kfold(n, 3)
    else:
        masks = torch.from_numpy(np.random.default_rng(3).random((3, n)) < 0.7)
    generator = torch.Generator().manual_seed(0)
    theta = 0.3 * torch.randn(1, 3, 1, d + 1, dtype=torch.float64, generator=generator)
    if labels == "own":
        targets = torch.stack([y, 1 - y, y[torch.randperm(n, generator=generator)]])
    else:
        targets = y.expand(3, n)
        theta[..., :-1] = 0.0  # the same logits, so the same curvature, in every fold
        theta[..., -1] = 0.4
    problems, mean, scale = problems_of(X, targets, masks, 2)
    z = problems.logits(theta, [0], [True])
    pre = curvature.Preconditioner(problems)
    pre.per_fold(z, [0])
    assert pre.fold_inverse is not None
    for fold in range(3):
        rows = masks[fold]
        x = (X[0][rows].double() - mean[0, fold]) / scale[0, fold]
        target = targets[fold][rows].double()
        lam = 1.0 / int(rows.sum())

        def loss(t: torch.Tensor, x=x, target=target, lam=lam) -> torch.Tensor:
            logit = x @ t[:-1] + t[-1]
            value = torch.nn.functional.softplus(logit) - target * logit
            return value.mean() + 0.5 * lam * t[:-1].square().sum()

        hessian = torch.autograd.functional.hessian(loss, theta[0, fold, 0])
        hessian[d, d] += lam  # the preconditioner's ridge also covers the intercept
        matrix = torch.linalg.inv(pre.fold_inverse[0, fold].double())
        torch.testing.assert_close(matrix, hessian, rtol=1e-3, atol=1e-3 * lam)


def test_float32_iterations_end_on_a_float64_exact_gradient():
    n, d, k = 480, 40, 3
    X, y = ill_conditioned(n, d, layers=2, k=k, seed=4)
    X = X + 5000.0  # offsets far above the signal: float32 rows must be centred first
    masks = kfold(n, 3, seed=4)
    fit = fit_logistic_batched(X, y, masks, k)
    assert bool(fit.converged.all())
    for layer in range(2):
        for fold in range(3):
            rows = masks[fold]
            x = (X[layer][rows].double() - fit.mean[layer, fold]) / fit.scale[layer, fold]
            t = torch.cat([fit.weight[layer, fold], fit.bias[layer, fold][:, None]], 1)
            t = t.clone().requires_grad_(True)
            z = x @ t[:, :-1].T + t[:, -1]
            labels = y[rows]
            value = (torch.logsumexp(z, 1) - z.gather(1, labels[:, None])[:, 0]).mean()
            value = value + 0.5 * t[:, :-1].square().sum() / int(rows.sum())
            (grad,) = torch.autograd.grad(value, t)
            exact = float(grad.abs().max())
            assert exact <= 1e-6
            assert abs(exact - float(fit.grad_norm[layer, fold])) < 1e-9


def test_more_features_than_rows_matches_sklearn():
    n, d, k = 90, 120, 3  # 60 training rows per fold: every fold shares its layer's refresh
    X, y = ill_conditioned(n, d, layers=1, k=k, seed=5)
    masks = kfold(n, 3, seed=5)
    fit = fit_logistic_batched(X, y, masks, k, tol=1e-8, max_iter=2000)
    assert bool(fit.converged.all())
    _, models = sklearn_reference_fit(
        X, y, masks, k, 1.0, max_iter=100_000, tol=1e-10, return_models=True
    )
    for fold in range(3):
        coef = models[0][fold][1].coef_
        error = np.linalg.norm(fit.weight[0, fold].numpy() - coef) / np.linalg.norm(coef)
        assert error < 1e-4, (fold, error)


def test_float32_rows_give_the_fit_of_their_float64_copy():
    """Probes read float32 stores as float32 (half the memory of a float64 copy): the fitter
    takes every statistic in float64 from the same values, so nothing changes, bit for bit."""
    X, y = ill_conditioned(300, 24, layers=2, k=3, seed=6)
    masks = kfold(300, 3, seed=6)
    single = fit_logistic_batched(X, y, masks, 3)
    double = fit_logistic_batched(X.double(), y, masks, 3)
    for name in ("mean", "scale", "weight", "bias", "n_iter", "grad_norm"):
        assert torch.equal(getattr(single, name), getattr(double, name)), name


def test_preconditioners_factor_in_float32_and_fall_back_to_float64():
    gen = torch.Generator().manual_seed(7)
    d = 50
    a = torch.randn(d, 2 * d, generator=gen, dtype=torch.float64)
    well = (a @ a.T / (2 * d))[None]
    ridge = 1e-3 * torch.eye(d, dtype=torch.float64)
    inverse = curvature._spd_inverse(well, ridge)
    assert inverse.dtype == torch.float32
    exact = torch.linalg.inv(well[0] + ridge)
    torch.testing.assert_close(inverse[0].double(), exact, rtol=1e-4, atol=1e-4)
    # Rank 3 at scale 1e4 with a ridge of 1e-7: float32 cannot factor it, float64 can.
    v = torch.randn(d, 3, generator=gen, dtype=torch.float64)
    bad = torch.cat([(v @ v.T * 1e4)[None], well])
    tiny = 1e-7 * torch.eye(d, dtype=torch.float64)
    assert int(torch.linalg.cholesky_ex((bad[0] + tiny).float())[1]) != 0
    both = curvature._spd_inverse(bad, tiny)
    assert bool(torch.isfinite(both).all())
    eig = torch.linalg.eigvalsh(both[0].double())
    assert float(eig.min()) > -1e-6 * float(eig.max())  # positive up to float32 rounding
    torch.testing.assert_close(
        both[1].double(), torch.linalg.inv(well[0] + tiny), rtol=1e-3, atol=1e-2
    )
