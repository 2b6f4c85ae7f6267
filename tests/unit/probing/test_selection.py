"""Settings chosen by leave-one-style-out, then one score on held-out text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probes.cache.store import write_store
from probes.errors import ProbesError
from probes.probing.selection import (
    Style,
    expected_calibration_error,
    probe_readings,
    score_on_test,
    select_settings,
)

LAYERS, D = 3, 16


def style_store(folder, style: int, n: int, shared_layer: int, seed: int):
    """Labels readable at every layer, but only ``shared_layer`` reads them the same way in
    every style; at the other layers each style has its own direction (a style artefact)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    acts = torch.randn(n, LAYERS, D, generator=gen)
    shared = torch.zeros(D)
    shared[0] = 3.0
    own = torch.zeros(D)
    own[1 + style] = 3.0
    for layer in range(LAYERS):
        direction = shared if layer == shared_layer else own
        acts[:, layer] += (2 * y[:, None] - 1) * direction
    table = [
        {"label": "ab"[int(y[i])], "group": f"s{style}f{i % 6}", "user_text": "the same words"}
        for i in range(n)
    ]
    return write_store(folder, {"resid_post": acts}, table)


@pytest.fixture()
def styles(tmp_path):
    """Setting 'last/raw' shares the signal at layer 2, 'mean/raw' at no layer at all."""
    out = []
    for k, name in enumerate(("templated", "conversations", "chatty")):
        stores = {
            "last/raw": style_store(tmp_path / f"{name}-last", k, 96, 2, seed=k),
            "mean/raw": style_store(tmp_path / f"{name}-mean", k, 96, -1, seed=10 + k),
        }
        out.append(Style(name, stores))
    return out


def test_selection_finds_the_setting_and_layer_that_carry_across_styles(styles) -> None:
    sel = select_settings(styles, validation=["conversations", "chatty"], Cs=(0.1, 1.0))
    assert (sel.chosen["setting"], sel.chosen["layer"]) == ("last/raw", 2)
    assert sel.chosen["validation_accuracy"] > 0.9
    assert len(sel.grid) == 2 * 2 * LAYERS
    others = [r for r in sel.grid if r["setting"] == "mean/raw"]
    assert max(r["validation_accuracy"] for r in others) < 0.75
    assert "the test set was not used" in sel.reason and "last/raw at layer 2" in sel.reason


def test_selection_breaks_accuracy_ties_by_log_loss(tmp_path) -> None:
    """Every layer reads the shared direction perfectly, but layer 2 with the larger margin:
    accuracy ties at 1.0 everywhere (the old rule took layer 0), log-loss picks layer 2."""
    styles = []
    for k, name in enumerate(("templated", "conversations", "chatty")):
        gen = torch.Generator().manual_seed(k)
        y = torch.arange(96) % 2
        acts = torch.randn(96, LAYERS, D, generator=gen)
        for layer, margin in enumerate((4.5, 5.0, 9.0)):
            acts[:, layer, 0] += (2 * y - 1) * margin
        table = [{"label": "ab"[int(v)], "group": f"s{k}f{i % 6}"} for i, v in enumerate(y)]
        styles.append(
            Style(name, {"last/raw": write_store(tmp_path / name, {"resid_post": acts}, table)})
        )
    sel = select_settings(styles, validation=["conversations", "chatty"], Cs=(1.0,))
    assert all(r["validation_accuracy"] == 1.0 for r in sel.grid)
    assert sel.chosen["layer"] == 2
    losses = [r["validation_log_loss"] for r in sel.grid]
    assert sel.chosen["validation_log_loss"] == min(losses) and losses[0] > losses[2]
    assert "lowest mean log-loss" in sel.reason


def test_held_out_score_with_baselines_and_in_set_reference(styles, tmp_path) -> None:
    sel = select_settings(styles, validation=["conversations", "chatty"], Cs=(1.0,))
    test = style_store(tmp_path / "test", 3, 60, 2, seed=99)
    rep = score_on_test(sel, styles, test, n_boot=200)
    assert rep.layer == 2 and rep.accuracy > 0.9
    assert rep.ci_low <= rep.accuracy <= rep.ci_high
    assert rep.best_layer_accuracy >= rep.accuracy
    assert rep.bow_accuracy < 0.7  # the rows' words say nothing about the label
    assert rep.in_set_accuracy > 0.9  # in-set, every layer reads the label
    others = [r["accuracy"] for r in rep.rows if r["layer"] != 2]
    assert others == pytest.approx([0.5, 0.5], abs=0.2)  # style-specific layers do not carry
    assert rep.n_test == 60 and rep.n_test_groups == 6 and 0 <= rep.ece <= 1


def test_readings_order_rows_by_the_positive_class(styles, tmp_path) -> None:
    sel = select_settings(styles, validation=["chatty"], Cs=(1.0,))
    target = style_store(tmp_path / "target", 4, 40, 2, seed=5)
    reading = probe_readings(sel, styles, target, "b")
    labels = np.asarray(target.column("label"))
    assert reading[labels == "b"].mean() > reading[labels == "a"].mean() + 2
    with pytest.raises(ProbesError, match="not one of the probe's labels"):
        probe_readings(sel, styles, target, "c")


def test_bad_requests_are_one_line_errors(styles) -> None:
    with pytest.raises(ProbesError, match="not among the styles"):
        select_settings(styles, validation=["nowhere"])
    with pytest.raises(ProbesError, match="at least two styles"):
        select_settings(styles[:1], validation=["templated"])


def test_calibration_error() -> None:
    y = np.array([0, 1] * 50)
    sure_and_right = np.eye(2)[y]
    assert expected_calibration_error(sure_and_right, y) == pytest.approx(0.0)
    sure_and_wrong = np.eye(2)[1 - y]
    assert expected_calibration_error(sure_and_wrong, y) == pytest.approx(1.0)
    honest = np.full((100, 2), 0.5)
    assert expected_calibration_error(honest, y) == pytest.approx(0.0)
