"""LEACE erasure inside the model (tiny model, real built-in dataset)."""

from __future__ import annotations

import torch

from probes.cache.extraction import extract_dataset
from probes.datasets import load_dataset
from probes.interventions.erasure import probe_after_erasure


def test_erasing_a_layer_puts_a_fresh_probe_there_at_chance(tiny_gemma, tmp_path):
    dataset = load_dataset("dialect_us_uk", size=96, seed=0)
    store = extract_dataset(tiny_gemma, dataset, layers="all", cache_root=tmp_path, progress=False)
    result = probe_after_erasure(tiny_gemma, store, 1, [2, 3], n_boot=50)
    rows = {r["layer"]: r for r in result["rows"]}
    assert rows[1]["accuracy_before"] is not None
    assert abs(rows[1]["accuracy_after"] - result["chance"]) <= 0.1
    assert set(rows) == {1, 2, 3}
    assert result["test_rows"] + result["eraser_rows"] == len(store)


def test_a_test_row_cap_scores_a_subset_of_the_held_out_half(tiny_gemma, tmp_path):
    dataset = load_dataset("dialect_us_uk", size=96, seed=0)
    store = extract_dataset(tiny_gemma, dataset, layers="all", cache_root=tmp_path, progress=False)
    full = probe_after_erasure(tiny_gemma, store, 1, [2], n_boot=20)
    capped = probe_after_erasure(tiny_gemma, store, 1, [2], n_boot=20, max_test_rows=30)
    assert capped["test_rows"] == 30 < full["test_rows"]
    assert capped["eraser_rows"] == full["eraser_rows"]  # the eraser still sees its whole half
    assert abs(capped["in_sample_accuracy_after"] - full["in_sample_accuracy_after"]) < 1e-9


def test_erasure_runs_on_a_bfloat16_model_whose_stores_are_bfloat16(tmp_path):
    # bfloat16 is the default dtype on CUDA; its stores keep it, and numpy has no bfloat16
    from probes.models.loading import load_model

    model = load_model("tiny-gemma3", device="cpu", dtype="bfloat16")
    dataset = load_dataset("dialect_us_uk", size=96, seed=0)
    store = extract_dataset(model, dataset, layers="all", cache_root=tmp_path, progress=False)
    assert store.get(1).dtype == torch.bfloat16
    result = probe_after_erasure(model, store, 1, [2], n_boot=20)
    rows = {r["layer"]: r for r in result["rows"]}
    assert rows[1]["accuracy_before"] is not None
    assert abs(rows[1]["accuracy_after"] - result["chance"]) <= 0.1
