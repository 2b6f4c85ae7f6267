from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probes.cache.store import write_store
from probes.cli.app import main
from probes.errors import ProbesError
from probes.probing.layerwise import fit_layerwise, make_splits
from probes.probing.transfer import transfer, transfer_matrix
from probes.viz.export import save_figure
from probes.viz.probing import plot_layerwise, plot_overview

N, LAYERS, D = 240, 4, 24
SIGNAL_LAYER = 2


def synthetic_store(folder, seed=0, n=N, signal=4.0, n_classes=2, bow_word=False):
    """Labels are linearly readable at SIGNAL_LAYER only; other layers are pure noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    acts = torch.randn(n, LAYERS, D, generator=gen)
    centres = torch.randn(n_classes, D, generator=torch.Generator().manual_seed(99)) * signal
    acts[:, SIGNAL_LAYER] += centres[y]
    words = ["alpha", "beta", "gamma", "delta"]
    table = [
        {
            "label": f"c{int(y[i])}",
            "group": f"family{i % 8}",
            "attribute": "synthetic",
            "user_text": (words[int(y[i])] if bow_word else "same words") + f" row {i}",
        }
        for i in range(n)
    ]
    return write_store(folder, {"resid_post": acts}, table)


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_probe_finds_the_signal_layer_and_controls_sit_at_chance(tmp_path, backend):
    store = synthetic_store(tmp_path / "s")
    result = fit_layerwise(store, backend=backend, n_boot=200)
    assert result.splits == "group" and result.n_folds == 5 and result.n_groups == 8
    by_layer = {r["layer"]: r for r in result.rows}
    assert result.best_layer == SIGNAL_LAYER
    assert by_layer[SIGNAL_LAYER]["accuracy"] > 0.97
    assert by_layer[SIGNAL_LAYER]["ci_low"] <= by_layer[SIGNAL_LAYER]["accuracy"]
    assert by_layer[SIGNAL_LAYER]["selectivity"] > 0.35
    for layer in (0, 1, 3):
        assert abs(by_layer[layer]["accuracy"] - 0.5) < 0.12
    for row in result.rows:
        assert abs(row["control_accuracy"] - 0.5) < 0.12
    assert result.majority_accuracy <= 0.5
    assert result.bow is not None and abs(result.bow["accuracy"] - 0.5) < 0.15
    assert "auroc" in by_layer[SIGNAL_LAYER]


def test_torch_and_sklearn_backends_agree(tmp_path):
    store = synthetic_store(tmp_path / "s", signal=0.6, n_classes=3)
    fast = fit_layerwise(store, backend="torch", n_boot=50, control=False, bow=False)
    ref = fit_layerwise(store, backend="sklearn", n_boot=50, control=False, bow=False)
    for a, b in zip(fast.rows, ref.rows, strict=True):
        assert abs(a["accuracy"] - b["accuracy"]) <= 0.01


def test_probing_chosen_layers_gives_those_rows_of_the_full_fit(tmp_path):
    store = synthetic_store(tmp_path / "s")
    full = fit_layerwise(store, n_boot=50, bow=False)
    some = fit_layerwise(store, n_boot=50, bow=False, layers=[3, SIGNAL_LAYER])
    assert [r["layer"] for r in some.rows] == [SIGNAL_LAYER, 3]
    for row in some.rows:
        reference = next(r for r in full.rows if r["layer"] == row["layer"])
        for key in ("accuracy", "control_accuracy", "ci_low", "ci_high"):
            assert row[key] == pytest.approx(reference[key], abs=1e-9)
    assert some.best_layer == SIGNAL_LAYER
    with pytest.raises(ProbesError, match="not in the store"):
        fit_layerwise(store, layers=[LAYERS])
    with pytest.raises(ProbesError, match="no layers"):
        fit_layerwise(store, layers=[])


def test_shuffled_labels_sit_at_chance(tmp_path):
    store = synthetic_store(tmp_path / "s")
    labels = store.column("label")
    rng = np.random.default_rng(0)
    for row, label in zip(store.table, rng.permutation(labels), strict=True):
        row["label"] = label
    result = fit_layerwise(store, n_boot=100, bow=False)
    assert max(r["accuracy"] for r in result.rows) < 0.62


def test_bag_of_words_sees_revealing_words(tmp_path):
    store = synthetic_store(tmp_path / "s", bow_word=True)
    result = fit_layerwise(store, n_boot=50, control=False)
    assert result.bow["accuracy"] > 0.95


def test_one_class_is_a_one_line_error(tmp_path):
    store = synthetic_store(tmp_path / "s")
    for row in store.table:
        row["label"] = "only"
    with pytest.raises(ProbesError, match="at least two classes") as info:
        fit_layerwise(store)
    assert "\n" not in str(info.value)


def test_splits_never_share_a_family():
    groups = [f"g{i % 6}" for i in range(60)]
    splits = make_splits([i % 2 for i in range(60)], groups, n_folds=3)
    for mask in splits.train_masks:
        train = {g for g, m in zip(groups, mask, strict=True) if m}
        test = {g for g, m in zip(groups, mask, strict=True) if not m}
        assert train.isdisjoint(test) and test


def test_transfer_between_stores_with_the_same_signal(tmp_path):
    a = synthetic_store(tmp_path / "a", seed=0)
    b = synthetic_store(tmp_path / "b", seed=1, n=120)
    result = transfer(a, b, n_boot=100)
    assert result.at_layer(SIGNAL_LAYER)["accuracy"] > 0.95
    assert result.at_layer(0)["accuracy"] < 0.7
    matrix = transfer_matrix({"a": a, "b": b}, layer=SIGNAL_LAYER)
    assert np.all(np.asarray(matrix["probe"]) > 0.9)


def test_figures_are_written(tmp_path):
    store = synthetic_store(tmp_path / "s")
    result = fit_layerwise(store, n_boot=50)
    files = save_figure(plot_layerwise(result), tmp_path / "fig" / "probe")
    assert files[0].suffix == ".html" and files[0].stat().st_size > 1000
    assert (tmp_path / "fig" / "plotly.min.js").exists()
    files = save_figure(plot_overview([result]), tmp_path / "fig" / "overview", png=False)
    assert len(files) == 1


def test_probe_cli_writes_results(tmp_path, capsys):
    store = synthetic_store(tmp_path / "s")
    assert main(["probe", "--store", str(store.path), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["best_layer"] == SIGNAL_LAYER
    assert "<- best" in capsys.readouterr().out
    assert main(["probe", "--store", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2


def test_a_fold_missing_a_class_is_a_user_error():
    labels = [0] * 10 + [1] * 10
    groups = ["a"] * 10 + ["b"] * 10  # each family holds one class only
    with pytest.raises(ProbesError, match="fewer classes"):
        make_splits(labels, groups, n_folds=2)


def test_splits_accept_group_arrays_as_well_as_lists():
    from probes.probing.layerwise import make_splits

    labels = ["a", "b"] * 6
    groups = [f"family{i % 3}" for i in range(12)]
    as_list = make_splits(labels, groups, n_folds=3)
    as_array = make_splits(np.asarray(labels), np.asarray(groups), n_folds=3)
    assert as_list.kind == as_array.kind == "group"
    assert np.array_equal(np.asarray(as_list.train_masks), np.asarray(as_array.train_masks))
