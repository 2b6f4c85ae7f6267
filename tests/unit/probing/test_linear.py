"""Batched logistic probes: they separate what is separable, sit at chance on shuffled labels,
and agree with scikit-learn's LogisticRegression on the same standardised training rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.base import clone

from probes.errors import ProbesError
from probes.probing.linear import (
    BatchedFit,
    FittedProbe,
    LinearProbe,
    fit_logistic_batched,
    predict_proba_batched,
    sklearn_reference_fit,
)


def activations(
    n: int, d: int, layers: int, k: int, signal: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation-like rows: offsets, uneven scales, correlated features, one constant column,
    and class means along random directions whose strength grows with depth."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    X = np.empty((layers, n, d), np.float32)
    for layer in range(layers):
        mixing = rng.normal(size=(d, d)) / np.sqrt(d)
        centres = rng.normal(size=(k, d)) * signal * (layer + 1) / layers
        x = (rng.normal(size=(n, d)) + centres[y]) @ mixing
        x = x * rng.uniform(0.5, 20.0, size=d) + rng.normal(0.0, 30.0, size=d)
        x[:, 0] = 7.0  # a constant feature: its std is 0 and becomes 1, as in StandardScaler
        X[layer] = x
    return torch.from_numpy(X), torch.from_numpy(y)


def fold_masks(n: int, folds: int, seed: int = 0) -> torch.Tensor:
    fold = np.random.default_rng(seed + 1000).permutation(n) % folds  # unrelated to the labels
    return torch.from_numpy(fold[None, :] != np.arange(folds)[:, None])


def held_out_accuracy(fit: BatchedFit, X: torch.Tensor, y: torch.Tensor, masks: torch.Tensor):
    pred = predict_proba_batched(fit, X).argmax(-1)  # [L, F, n]
    test = ~masks
    labels = y if y.ndim == 2 else y.expand_as(masks)
    return ((pred == labels) & test).sum(-1) / test.sum(-1)  # [L, F]


def test_planted_direction_is_found_and_shuffled_labels_sit_at_chance():
    n, d = 600, 64
    X, y = activations(n, d, layers=2, k=2, signal=3.0)
    masks = fold_masks(n, folds=3)
    fit = fit_logistic_batched(X, y, masks, 2)
    assert fit.weight.shape == (2, 3, 1, d) and fit.bias.shape == (2, 3, 1)
    assert bool(fit.converged.all()) and int(fit.n_iter.max()) < 500
    assert held_out_accuracy(fit, X, y, masks).min() > 0.95

    generator = torch.Generator().manual_seed(1)
    shuffled = torch.stack([y[torch.randperm(n, generator=generator)] for _ in range(3)])
    control = fit_logistic_batched(X, y, masks, 2, y_per_fold=shuffled)
    accuracy = held_out_accuracy(control, X, shuffled, masks)
    # 200 test rows per fold: one fold's accuracy has sd 0.035 around 0.5; six folds average.
    assert abs(float(accuracy.mean()) - 0.5) < 0.08


@pytest.mark.parametrize(("k", "C"), [(2, 1.0), (2, 0.05), (3, 1.0)])
def test_batched_fit_agrees_with_sklearn(k: int, C: float):
    n, d, layers, folds = 300, 24, 3, 3
    X, y = activations(n, d, layers, k, signal=0.8, seed=k)
    masks = fold_masks(n, folds, seed=k)
    fit = fit_logistic_batched(X, y, masks, k, C=C)
    assert bool(fit.converged.all())
    pred = predict_proba_batched(fit, X).argmax(-1).numpy()
    ref, models = sklearn_reference_fit(
        X, y, masks, k, C, max_iter=5000, tol=1e-8, return_models=True
    )
    test = ~masks.numpy()
    for layer in range(layers):
        for fold in range(folds):
            agree = (pred[layer, fold] == ref[layer, fold])[test[fold]].mean()
            assert agree >= 0.99, (layer, fold, agree)
            scaler, model = models[layer][fold]
            np.testing.assert_allclose(fit.mean[layer, fold].numpy(), scaler.mean_, rtol=1e-6)
            np.testing.assert_allclose(fit.scale[layer, fold].numpy(), scaler.scale_, rtol=1e-6)
            weight = fit.weight[layer, fold].numpy()
            error = np.linalg.norm(weight - model.coef_) / np.linalg.norm(model.coef_)
            assert error < 1e-3, (layer, fold, error)
            bias = fit.bias[layer, fold].numpy()
            np.testing.assert_allclose(bias, model.intercept_, atol=1e-3 * (1 + np.abs(bias).max()))


def test_per_fold_labels_are_honoured():
    n, d = 300, 16
    X, y = activations(n, d, layers=1, k=2, signal=2.0)
    same = fold_masks(n, folds=2)[:1].expand(2, n)  # two folds on the same rows
    fit = fit_logistic_batched(X, y, same, 2, y_per_fold=torch.stack([y, 1 - y]), tol=1e-10)
    # Swapping the two labels negates the optimum exactly.
    torch.testing.assert_close(fit.weight[0, 1], -fit.weight[0, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fit.bias[0, 1], -fit.bias[0, 0], atol=1e-5, rtol=1e-4)
    plain = fit_logistic_batched(X, y, same, 2)
    torch.testing.assert_close(plain.weight[0, 1], plain.weight[0, 0])


def test_per_fold_C_fits_each_fold_at_its_own_C():
    """A grid of C values as extra folds of one call: each fold reaches the optimum a
    separate call at its C reaches (the minimiser, not the iterate, is what is shared)."""
    n, d = 300, 16
    X, y = activations(n, d, layers=2, k=3, signal=1.0, seed=4)
    one = fold_masks(n, folds=2, seed=4)
    masks = one.repeat(2, 1)  # folds (a, b) at C=0.05, then the same folds at C=5
    grid = fit_logistic_batched(X, y, masks, 3, C=[0.05, 0.05, 5.0, 5.0], tol=1e-9)
    for c_index, C in enumerate((0.05, 5.0)):
        alone = fit_logistic_batched(X, y, one, 3, C=C, tol=1e-9)
        part = grid.weight[:, 2 * c_index : 2 * c_index + 2]
        torch.testing.assert_close(part, alone.weight, atol=1e-4, rtol=1e-3)
    assert not torch.allclose(grid.weight[:, :2], grid.weight[:, 2:], atol=1e-2)
    with pytest.raises(ProbesError, match="one per fold"):
        fit_logistic_batched(X, y, masks, 3, C=[1.0, 2.0])
    with pytest.raises(ProbesError, match="positive finite"):
        fit_logistic_batched(X, y, masks, 3, C=[1.0, 1.0, 0.0, 1.0])


def test_multiclass_per_fold_labels_match_sklearn():
    n, d = 240, 12
    X, y = activations(n, d, layers=1, k=3, signal=1.5, seed=3)
    masks = fold_masks(n, folds=2, seed=3)
    labels = torch.stack([y, (y + 1) % 3])
    fit = fit_logistic_batched(X, y, masks, 3, y_per_fold=labels)
    _, models = sklearn_reference_fit(X, labels, masks, 3, 1.0, tol=1e-8, return_models=True)
    for fold in range(2):
        coef = models[0][fold][1].coef_
        error = np.linalg.norm(fit.weight[0, fold].numpy() - coef) / np.linalg.norm(coef)
        assert error < 1e-3


def string_data(k: int = 3, n: int = 240, d: int = 16):
    X, y = activations(n, d, layers=1, k=k, signal=3.0, seed=5)
    names = np.array(["young", "old", "middle"][:k])
    return X[0].numpy(), names[y.numpy()]


def test_linear_probe_is_a_sklearn_estimator_with_string_labels():
    X, labels = string_data()
    probe = LinearProbe(C=0.5, max_iter=300)
    copy = clone(probe)
    assert copy.get_params() == {"C": 0.5, "max_iter": 300, "tol": 1e-6}
    probe.fit(X, labels)
    assert not hasattr(clone(probe), "fitted_")
    assert list(probe.classes_) == ["middle", "old", "young"]
    assert isinstance(probe.fitted_, FittedProbe)
    assert probe.fitted_.classes == ("middle", "old", "young")
    predicted = probe.predict(X)
    assert set(predicted) <= set(labels) and probe.score(X, labels) > 0.95
    proba = probe.predict_proba(torch.from_numpy(X))
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    assert list(probe.fitted_.predict(X)) == list(predicted)

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=5000, tol=1e-8))
    reference.fit(X.astype(np.float64), labels)
    np.testing.assert_allclose(proba, reference.predict_proba(X.astype(np.float64)), atol=1e-4)


def test_binary_probe_matches_sklearn_decision_function():
    X, labels = string_data(k=2)
    probe = LinearProbe().fit(X, labels)
    assert probe.fitted_.weight.shape == (1, X.shape[1])
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, tol=1e-8))
    reference.fit(X.astype(np.float64), labels)
    score = probe.decision_function(X)
    assert score.shape == (X.shape[0],)
    np.testing.assert_allclose(score, reference.decision_function(X), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.ones((5, 3)), ["a"] * 5, "needs at least two classes"),
        (np.ones((0, 3)), [], "empty"),
        (np.ones((5, 3)), ["a", "b"], "rows but y has"),
    ],
)
def test_unusable_input_raises_one_line_probes_error(X, y, message):
    with pytest.raises(ProbesError, match=message) as caught:
        LinearProbe().fit(X, y)
    assert "\n" not in str(caught.value)


def test_save_load_round_trip_predicts_bitwise_identically(tmp_path):
    X, labels = string_data()
    fitted = dataclasses.replace(
        LinearProbe().fit(X, labels).fitted_, layer=7, site="resid_post", attribute="age"
    )
    tensors, meta = fitted.save(tmp_path / "probes" / "age-7")
    assert tensors.name == "age-7.safetensors" and meta.name == "age-7.json"
    loaded = FittedProbe.load(tmp_path / "probes" / "age-7")
    assert (loaded.classes, loaded.layer, loaded.site, loaded.attribute, loaded.C) == (
        fitted.classes,
        7,
        "resid_post",
        "age",
        1.0,
    )
    assert torch.equal(loaded.predict_proba(X), fitted.predict_proba(X))
    assert list(loaded.predict(X)) == list(fitted.predict(X))


def test_load_refuses_tensors_that_do_not_match_their_json(tmp_path):
    X, labels = string_data()
    LinearProbe().fit(X, labels).fitted_.save(tmp_path / "a")
    LinearProbe(C=0.1).fit(X, labels).fitted_.save(tmp_path / "b")
    (tmp_path / "a.safetensors").write_bytes((tmp_path / "b.safetensors").read_bytes())
    with pytest.raises(ProbesError, match="checksum"):
        FittedProbe.load(tmp_path / "a")


@pytest.mark.parametrize("k", [2, 3])
def test_direction_is_the_raw_space_logit_gradient_and_raises_its_class(k: int):
    X, labels = string_data(k=k)
    fitted = LinearProbe().fit(X, labels).fitted_
    x = torch.from_numpy(X).to(torch.float64)
    typical = x.std(0).norm()
    for index, cls in enumerate(fitted.classes):
        direction = fitted.direction(cls, dtype=torch.float64)
        assert direction.shape == (X.shape[1],)
        point = x[:1].clone().requires_grad_(True)
        logits = fitted.decision_function(point)[0]
        logit = logits[0] * (1 if index == 1 else -1) if k == 2 else logits[index]
        (gradient,) = torch.autograd.grad(logit, point)
        torch.testing.assert_close(gradient[0], direction)
        moved = x + 0.5 * typical * direction / direction.norm()
        before = fitted.predict_proba(x)[:, index]
        after = fitted.predict_proba(moved)[:, index]
        assert bool((after > before).all())
    with pytest.raises(ProbesError, match="Unknown class"):
        fitted.direction("nobody")
