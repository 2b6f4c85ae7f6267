"""Stores larger than memory: layers are read shard by shard and probed a few at a time, with
row-blocked statistics; on a small store the out-of-core path gives the in-memory accuracies."""

from __future__ import annotations

import ctypes
import gc
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from probes.cache.store import ActivationStore, write_store
from probes.errors import CacheError, ProbesError
from probes.probing import linear, objective
from probes.probing.layerwise import (
    _fit_predict,
    encode_labels,
    fit_layerwise,
    layer_chunks,
    make_splits,
    out_of_fold,
)
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


def _rss_bytes(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def _map_large_allocations() -> None:
    """Serve allocations of 1 MiB and up from their own mappings, returned on free, as glibc
    does for every layer of a large store (its dynamic threshold stops at 32 MiB). Without it
    the small layers below come from the heap after the first free, where fragmentation keeps
    freed layers resident and the high-water mark measures the allocator, not the fitter."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("needs glibc's mallopt")
    assert libc.mallopt(-3, 2**20) == 1  # M_MMAP_THRESHOLD (fixed from now on)


def _peak_rise(fn):
    """``fn()`` and how far the resident set rose above where it started (Linux: the kernel's
    high-water mark is reset first), so a test can bound a working set in bytes."""
    gc.collect()
    start = _rss_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    out = fn()
    return out, _rss_bytes("VmHWM") - start


@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable VmHWM"
)
def test_the_chunked_working_set_is_one_layer_and_its_accuracies_are_the_in_memory_ones(
    tmp_path, monkeypatch
):
    # 4 layers of 16,000 x 256: one float64 layer is 31 MiB, every layer at once 125 MiB.
    n, layers, d = 16_000, 4, 256
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    acts = torch.randn(n, layers, d, generator=gen)
    acts[:, :, 0] += 0.5 * torch.arange(layers)[None, :] * (2 * y[:, None] - 1)
    table = [{"label": "ab"[int(c)], "group": f"g{i % 10}"} for i, c in enumerate(y)]
    store = write_store(tmp_path / "s", {"resid_post": acts}, table, shard_size=1000)
    del acts
    layer_bytes = n * d * 8
    # Statistics in row blocks, as on a store whose layer is far larger than a block.
    monkeypatch.setattr(objective, "ROW_BLOCK_BYTES", layer_bytes // 16)

    fresh = ActivationStore.open(store.path)  # nothing read yet: read() caches nothing

    def chunked():
        return fit_layerwise(
            fresh,
            n_folds=3,
            n_boot=20,
            bow=False,
            control=False,
            max_working_bytes=layer_bytes,  # one layer at a time
        )

    def in_memory():  # every layer stacked, one batched fit (the benchmark's in-memory path)
        s = ActivationStore.open(store.path)
        labels = encode_labels(s.labels)[1]
        masks = make_splits(labels, s.column("group"), 3, 0).train_masks
        X = torch.stack([s.get(layer) for layer in s.layers]).float()
        proba = out_of_fold(_fit_predict(X, labels, masks, 2, 1.0, "torch"), masks)
        return [float(a) for a in (proba.argmax(-1) == labels[None, :]).mean(-1)]

    _map_large_allocations()
    fit_layerwise(_store(tmp_path / "warm"), n_folds=3, n_boot=20, bow=False)  # lazy imports
    result, chunked_peak = _peak_rise(chunked)
    accuracies, in_memory_peak = _peak_rise(in_memory)
    assert [r["accuracy"] for r in result.rows] == accuracies
    assert accuracies[-1] > 0.8  # the planted signal is found
    # The chunked path holds the float32 layer as read, the fitter's float32 rows (together
    # one float64 layer) and a few row blocks (a sixteenth of a layer each), not every layer;
    # measured 1.3 to 1.5 layers (the float64 row blocks of the last iterations).
    assert chunked_peak < 1.6 * layer_bytes, chunked_peak / layer_bytes
    assert in_memory_peak > 3 * layer_bytes, in_memory_peak / layer_bytes  # measured 11


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_finiteness_check_still_refuses_nan_and_infinity(bad, dtype):
    X = torch.randn(2, 40, 3, dtype=dtype)
    y = torch.arange(40) % 2
    masks = torch.ones(1, 40, dtype=torch.bool)
    linear.fit_logistic_batched(X, y, masks, 2)  # finite: fitted
    X[1, 17, 2] = bad
    with pytest.raises(ProbesError, match="no NaN or infinite"):
        linear.fit_logistic_batched(X, y, masks, 2)


def test_read_fills_a_slice_of_a_larger_buffer(tmp_path):
    a, b = _store(tmp_path / "a", seed=0), _store(tmp_path / "b", seed=1)
    both = torch.full((2, 2 * N, D), float("nan"), dtype=torch.float64)
    assert a.read([0, 2], out=both[:, :N]) is not None
    b.read([0, 2], out=both[:, N:])
    expected = torch.cat(
        [a.read([0, 2], dtype=torch.float64), b.read([0, 2], dtype=torch.float64)], 1
    )
    assert torch.equal(both, expected)
    with pytest.raises(CacheError, match="out has shape"):
        a.read([0, 2], out=both)
