"""Several read-out positions from one forward pass: the same stores, byte for byte, as one
extraction per position, with only the missing stores (or shards) costing model work."""

from __future__ import annotations

import pytest
import torch

from probes.cache.extraction import extract, extract_positions
from probes.cache.positions import PositionSpec
from probes.errors import ProbesError

PROMPTS = [f"prompt {i} about the weather in town" * (1 + i % 3) for i in range(9)]


def _forward_counter(model):
    calls: list[int] = []
    handle = model.hf_model.base_model.register_forward_pre_hook(lambda *a, **k: calls.append(1))
    return calls, handle


def _files(store) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.path.iterdir()) if p.is_file()}


def test_one_pass_gives_the_stores_of_separate_passes(tiny_gemma, tmp_path):
    index = PositionSpec("index", indices=tuple(i % 3 for i in range(len(PROMPTS))))
    common = {"shard_size": 4, "batch_size": 3, "progress": False}
    calls, handle = _forward_counter(tiny_gemma)
    try:
        together = extract_positions(
            tiny_gemma, PROMPTS, ["last", "mean", index], cache_root=tmp_path / "one", **common
        )
    finally:
        handle.remove()
    assert len(calls) == 3 + 1 + 1  # shards of 4, 4, 1 rows in batches of 3: one pass only
    for spec, store in zip(["last", "mean", index], together, strict=True):
        alone = extract(tiny_gemma, PROMPTS, position=spec, cache_root=tmp_path / "sep", **common)
        assert store.path.name == alone.path.name  # the same content-addressed key
        assert _files(store) == _files(alone)  # and the same bytes
    last, mean, _ = together
    assert not torch.equal(last.get(1), mean.get(1))


def test_only_missing_stores_run_and_cached_ones_are_returned(tiny_gemma, tmp_path):
    common = {"shard_size": 4, "batch_size": 3, "progress": False, "cache_root": tmp_path}
    last = extract(tiny_gemma, PROMPTS, position="last", **common)
    calls, handle = _forward_counter(tiny_gemma)
    try:
        again = extract_positions(tiny_gemma, PROMPTS, ["last", "mean"], **common)
        n_after_mean = len(calls)
        cached = extract_positions(tiny_gemma, PROMPTS, ["mean", "last"], **common)
    finally:
        handle.remove()
    assert n_after_mean == 5 and len(calls) == n_after_mean  # mean ran once, then all cached
    assert again[0].path == last.path and cached[1].path == last.path
    assert cached[0].path == again[1].path


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        ([], "at least one position"),
        (["last", "last"], "repeat"),
        (["last", PositionSpec("suffix", suffix=" so")], "suffix"),
        (["sideways"], "unknown position"),
    ],
)
def test_bad_position_lists_are_refused(tiny_gemma, tmp_path, positions, message):
    with pytest.raises(ProbesError, match=message):
        extract_positions(tiny_gemma, PROMPTS, positions, cache_root=tmp_path, progress=False)
