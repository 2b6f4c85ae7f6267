"""Store integrity, resumption from a corrupt partial manifest, file modes, truncation and the
memory budget (issue 18)."""

from __future__ import annotations

import errno
import json
import os
import stat
from types import SimpleNamespace

import pytest
import torch

from probes.atomic import atomic_write_text
from probes.cache import budget
from probes.cache.extraction import _Capture, extract
from probes.cache.store import MANIFEST, PARTIAL, ActivationStore
from probes.errors import CacheError, FileError, ProbesError

PROMPTS = [f"user {i} says {'hello ' * (i % 5)}" for i in range(12)]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_manifest_checksums_every_file_and_open_refuses_edits(tiny_gemma, tmp_path):
    store = extract(tiny_gemma, PROMPTS, cache_root=tmp_path, shard_size=5, progress=False)
    manifest = json.loads((store.path / MANIFEST).read_text())
    assert manifest["format"] == 2 and len(manifest["digest"]) == 64
    assert manifest["table"]["bytes"] == (store.path / "table.jsonl").stat().st_size
    assert [s["bytes"] for s in manifest["shards"]] == [
        (store.path / s["file"]).stat().st_size for s in manifest["shards"]
    ]
    # a shard whose bytes change but not its size passes the cheap open, not verify() or a read
    shard = store.path / manifest["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    opened = ActivationStore.open(store.path)
    with pytest.raises(CacheError, match="checksum"):
        opened.verify()
    with pytest.raises(CacheError, match="corrupt"):
        opened.get(0)


def test_stale_store_message_names_what_differs(tiny_gemma, tmp_path):
    store = extract(tiny_gemma, PROMPTS, cache_root=tmp_path, progress=False)
    with pytest.raises(CacheError, match=r"model fingerprint '[0-9a-f]+' vs 'feedface'"):
        ActivationStore.open(store.path, model_fingerprint="feedface")


def test_store_files_share_one_mode_and_no_temporary_file_is_left(tiny_gemma, tmp_path):
    previous = os.umask(0o022)
    try:
        first = extract(tiny_gemma, PROMPTS, cache_root=tmp_path, shard_size=5, progress=False)
        folder = first.path
        (folder / MANIFEST).unlink()  # back to a partial store, with litter from a killed run
        (folder / PARTIAL).write_text(json.dumps({"not": "a manifest"}))
        (folder / ".shard-00001.safetensors.tmp-4242").write_bytes(b"half a shard")
        (folder / ".table.jsonl.x1y2.tmp").write_bytes(b"half a table")
        before = _files(folder)
        again = extract(tiny_gemma, PROMPTS, cache_root=tmp_path, shard_size=5, progress=False)
    finally:
        os.umask(previous)
    assert again.path == folder
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert set(modes.values()) == {0o644}, modes
    after = _files(folder)
    for name, data in after.items():  # recovered from the corrupt partial: same bytes
        if name.startswith("shard-"):
            assert data == before[name]


def test_killed_extraction_with_a_cut_partial_manifest_resumes_to_the_same_store(
    tiny_gemma, tmp_path, monkeypatch
):
    fresh = extract(tiny_gemma, PROMPTS, cache_root=tmp_path / "a", shard_size=4, progress=False)
    real_run, calls = _Capture.run, []

    def dying(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(_Capture, "run", dying)
    with pytest.raises(KeyboardInterrupt):
        extract(tiny_gemma, PROMPTS, cache_root=tmp_path / "b", shard_size=4, progress=False)
    monkeypatch.setattr(_Capture, "run", real_run)
    partial = next((tmp_path / "b").glob(f"*/{PARTIAL}"))
    partial.write_bytes(partial.read_bytes()[:40])  # cut short, as by a full disk
    resumed = extract(tiny_gemma, PROMPTS, cache_root=tmp_path / "b", shard_size=4, progress=False)
    assert _files(resumed.path) == _files(fresh.path)


def test_cache_hit_compares_the_table_with_the_request(tiny_gemma, tmp_path):
    store = extract(tiny_gemma, PROMPTS, cache_root=tmp_path, progress=False)
    table = store.path / "table.jsonl"
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    rows[3]["text"] = rows[3]["text"].upper()
    table.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    with pytest.raises(CacheError, match=r"table.jsonl of store .* was changed"):
        extract(tiny_gemma, PROMPTS, cache_root=tmp_path, progress=False)


@pytest.mark.parametrize("side", ["right", "left"])
def test_truncation_reads_what_the_kept_tokens_say_and_is_recorded(tiny_gemma, tmp_path, side):
    long = "abcdefghij" * 5  # the byte tokenizer: one token per character, plus BOS
    cut = long[:11] if side == "right" else long[-11:]
    store = extract(
        tiny_gemma,
        [long, "short"],
        cache_root=tmp_path,
        max_tokens=12,
        truncate=side,
        progress=False,
    )
    assert store.request["truncation"] == {"max_tokens": 12, "side": side}
    plain = extract(tiny_gemma, [cut, "short"], cache_root=tmp_path, progress=False)
    torch.testing.assert_close(store.stack(), plain.stack())
    assert "truncation" not in plain.request  # stores without truncation keep their keys


def test_rows_over_the_context_are_refused_before_any_store_exists(tiny_gpt2, tmp_path):
    with pytest.raises(ProbesError, match="context of 1,024"):
        extract(tiny_gpt2, ["x" * 1500], cache_root=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_memory_budget_refuses_terabyte_batches_and_passes_ordinary_ones():
    gemma = SimpleNamespace(intermediate_size=2048, num_attention_heads=4)
    with pytest.raises(ProbesError, match="GiB"):
        budget.check_memory(gemma, 640, 16, 32_768, 4, available=64 * 2**30)
    budget.check_memory(gemma, 640, 16, 200, 4, available=8 * 2**30)
    assert budget.batch_bytes(gemma, 640, 16, 32_768, 4) > 2**39  # over half a terabyte


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("the old results\n")

    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("probes.atomic.os.fsync", full)
    with pytest.raises(FileError, match=f"cannot write {target}: No space left on device"):
        atomic_write_text(target, "new")
    assert target.read_text() == "the old results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
