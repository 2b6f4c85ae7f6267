"""Stores larger than memory: layers are read shard by shard and probed a few at a time, with
row-blocked statistics; on a small store the out-of-core path gives the in-memory accuracies."""

from __future__ import annotations

import numpy as np
import torch

from probes.cache.store import ActivationStore, write_store
from probes.probing import objective
from probes.probing.layerwise import fit_layerwise, layer_chunks
from probes.probing.transfer import transfer

N, LAYERS, D = 360, 4, 24


def _store(path, seed: int = 0) -> ActivationStore:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(N) % 3
    acts = torch.randn(N, LAYERS, D, generator=gen)
    for layer in range(LAYERS):  # the class signal grows with depth
        acts[:, layer, :3] += 0.9 * layer * torch.nn.functional.one_hot(labels, 3)
    table = [
        {"label": ["a", "b", "c"][int(c)], "group": f"g{i % 12}", "text": f"t{i}"}
        for i, c in enumerate(labels)
    ]
    return write_store(path, {"resid_post": acts}, table, shard_size=50)


def test_read_streams_the_shards_and_keeps_nothing(tmp_path):
    store = _store(tmp_path / "s")
    block = store.read([1, 3], dtype=torch.float64)
    assert block.shape == (2, N, D) and block.dtype == torch.float64
    assert not store._tensors  # read() caches nothing
    fresh = ActivationStore.open(store.path)
    assert torch.equal(block[1], fresh.get(3).double())
    assert list(fresh._tensors) == ["resid_post.3"]  # get() loads only the layer asked for


def test_layer_chunks_bound_the_working_set():
    assert layer_chunks([0, 1, 2, 3], 100, 10, 10**9) == [[0, 1, 2, 3]]
    assert layer_chunks([0, 1, 2, 3], 100, 10, 2 * 100 * 10 * 8) == [[0, 1], [2, 3]]
    assert layer_chunks([5, 7], 100, 10, 1) == [[5], [7]]  # at least one layer


def test_out_of_core_probing_equals_the_in_memory_path(tmp_path, monkeypatch):
    store = _store(tmp_path / "s")
    whole = fit_layerwise(store, n_folds=3, n_boot=50, bow=False)
    assert whole.rows[-1]["accuracy"] > 0.6  # the planted signal is found
    monkeypatch.setattr(objective, "ROW_BLOCK_BYTES", 37 * D * 8)  # statistics in ten row blocks
    chunked = fit_layerwise(
        ActivationStore.open(store.path), n_folds=3, n_boot=50, bow=False, max_working_bytes=1
    )
    for a, b in zip(whole.rows, chunked.rows, strict=True):
        assert a["layer"] == b["layer"]
        assert a["accuracy"] == b["accuracy"]
        assert a["control_accuracy"] == b["control_accuracy"]
        assert a["macro_f1"] == b["macro_f1"]


def test_out_of_core_transfer_equals_the_in_memory_path(tmp_path):
    train, test = _store(tmp_path / "a", seed=0), _store(tmp_path / "b", seed=1)
    whole = transfer(train, test, n_boot=20)
    chunked = transfer(train, test, n_boot=20, max_working_bytes=1)
    np.testing.assert_array_equal(
        [r["accuracy"] for r in whole.rows], [r["accuracy"] for r in chunked.rows]
    )
