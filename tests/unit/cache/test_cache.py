from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from probes.cache.extraction import extract, parse_layers
from probes.cache.positions import PositionSpec
from probes.cache.store import ActivationStore, StoreWriter
from probes.errors import CacheError, ProbesError

PROMPTS = [
    "Hello there my friend, how are you today?",
    "Hi",
    "I love the colour of autumn leaves.",
    "Short one",
    "A somewhat longer prompt that has quite a few more tokens than the rest of them",
]
HOOKS = {
    "resid_pre": "blocks.{}.hook_in",
    "resid_post": "blocks.{}.hook_out",
    "attn_out": "blocks.{}.attn.hook_out",
    "mlp_out": "blocks.{}.mlp.hook_out",
}


def _reference(model, prompt: str, site: str, layer: int, spec: PositionSpec, row: int):
    text = prompt + (spec.suffix or "")
    ids = torch.tensor([model.tokenizer(text).input_ids])
    _, cache = model.bridge.run_with_cache(ids)
    acts = cache[HOOKS[site].format(layer)][0]
    if spec.kind in ("last", "suffix"):
        return acts[-1]
    if spec.kind == "index":
        return acts[spec.indices[row]]
    return acts[1:].mean(0)  # mean leaves out BOS


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize(
    "spec",
    [
        PositionSpec("last"),
        PositionSpec("mean"),
        PositionSpec("suffix", suffix=" I think the age of this user is"),
        PositionSpec("index", indices=(1, 0, -2, 2, 5)),
    ],
    ids=["last", "mean", "suffix", "index"],
)
def test_extract_equals_run_with_cache(tiny_model, tmp_path, padding_side, spec):
    store = extract(
        tiny_model,
        PROMPTS,
        sites=list(HOOKS),
        position=spec,
        batch_size=3,
        cache_root=tmp_path,
        padding_side=padding_side,
        progress=False,
    )
    assert len(store) == len(PROMPTS) and store.layers == list(range(tiny_model.n_layers))
    for row, prompt in enumerate(PROMPTS):
        for site in HOOKS:
            for layer in store.layers:
                ref = _reference(tiny_model, prompt, site, layer, spec, row)
                torch.testing.assert_close(store.get(layer, site)[row], ref, atol=1e-5, rtol=1e-4)
    stacked = store.stack("resid_post")
    assert stacked.shape == (len(PROMPTS), tiny_model.n_layers, tiny_model.d_model)


def test_metadata_table_and_subset_of_layers(tiny_gemma, tmp_path):
    meta = [{"label": "a" if i % 2 else "b", "group": f"g{i}"} for i in range(len(PROMPTS))]
    store = extract(
        tiny_gemma, PROMPTS, layers="1-2", metadata=meta, cache_root=tmp_path, progress=False
    )
    assert store.layers == [1, 2]
    assert store.labels == [m["label"] for m in meta]
    assert store.column("group") == [m["group"] for m in meta]
    assert store.texts == PROMPTS
    with pytest.raises(CacheError, match="layer 0"):
        store.get(0)


def test_cache_hit_does_no_forward_pass(tiny_gemma, tmp_path):
    calls = []
    handle = tiny_gemma.hf_model.base_model.register_forward_pre_hook(
        lambda *a, **k: calls.append(1)
    )
    try:
        first = extract(tiny_gemma, PROMPTS, batch_size=2, cache_root=tmp_path, progress=False)
        n_first = len(calls)
        second = extract(tiny_gemma, PROMPTS, batch_size=2, cache_root=tmp_path, progress=False)
    finally:
        handle.remove()
    assert n_first == 3 and len(calls) == n_first
    assert second.path == first.path
    # a different request (another position) is a different store, and does run the model
    other = extract(tiny_gemma, PROMPTS, position="mean", cache_root=tmp_path, progress=False)
    assert other.path != first.path


def test_corrupt_shard_is_refused_naming_it(tiny_gemma, tmp_path):
    store = extract(tiny_gemma, PROMPTS, shard_size=2, cache_root=tmp_path, progress=False)
    shard = store.path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    reopened = ActivationStore.open(store.path)
    with pytest.raises(CacheError, match="shard-00001"):
        reopened.verify()
    with pytest.raises(CacheError, match=r"shard-00001.*corrupt"):
        reopened.get(0)


def test_stale_store_is_refused_naming_what_differs(tiny_gemma, tiny_gpt2, tmp_path):
    store = extract(tiny_gemma, PROMPTS, cache_root=tmp_path, progress=False)
    with pytest.raises(CacheError, match="built for model tiny-gemma3"):
        ActivationStore.open(store.path, model_fingerprint=tiny_gpt2.fingerprint)
    with pytest.raises(CacheError, match="built for dataset"):
        ActivationStore.open(store.path, dataset_hash="0" * 64)
    partial = tmp_path / "partial"
    StoreWriter(partial, {"model": {"name": "x", "fingerprint": "1"}}, [])
    with pytest.raises(CacheError, match="fingerprint '1' vs '2'"):
        StoreWriter(partial, {"model": {"name": "x", "fingerprint": "2"}}, [])


def test_bad_requests_are_user_errors(tiny_gemma, tmp_path):
    with pytest.raises(ProbesError, match="no prompts"):
        extract(tiny_gemma, [], cache_root=tmp_path)
    with pytest.raises(ProbesError, match="unknown site"):
        extract(tiny_gemma, PROMPTS, sites="resid_middle", cache_root=tmp_path)
    with pytest.raises(ProbesError, match="layers must lie"):
        extract(tiny_gemma, PROMPTS, layers=[99], cache_root=tmp_path)
    with pytest.raises(ProbesError, match="unknown position"):
        extract(tiny_gemma, PROMPTS, position="middle", cache_root=tmp_path)
    assert parse_layers("0,2-3", 4) == [0, 2, 3] and parse_layers([-1], 4) == [3]


_SLOW_EXTRACT = textwrap.dedent(
    """
    import sys, time
    from probes.cache import store
    from probes.cache.extraction import extract
    from probes.models.loading import load_model

    original = store.StoreWriter.write_shard

    def slow(self, *args, **kwargs):
        original(self, *args, **kwargs)
        print("shard", flush=True)
        time.sleep(0.4)

    store.StoreWriter.write_shard = slow
    prompts = [f"prompt number {i} with a few words" * (1 + i % 3) for i in range(40)]
    extract(load_model("tiny-gemma3"), prompts, shard_size=4, batch_size=3,
            cache_root=sys.argv[1], progress=False)
    """
)


def _shard_digests(store: ActivationStore) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.path.glob("shard-*.safetensors"))
    }


def test_killed_run_resumes_to_identical_bytes(tiny_gemma, tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_EXTRACT)
    killed_root = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(killed_root)], stdout=subprocess.PIPE, text=True
    )
    for _ in range(3):  # let three shards land, then kill -9 mid-run
        assert proc.stdout.readline().strip() == "shard"
    time.sleep(0.1)
    proc.kill()
    proc.wait()
    (folder,) = list(killed_root.iterdir())
    assert not (folder / "manifest.json").exists() and (folder / "manifest.partial.json").exists()
    with pytest.raises(CacheError, match="incomplete"):
        ActivationStore.open(folder)

    prompts = [f"prompt number {i} with a few words" * (1 + i % 3) for i in range(40)]
    calls = []
    handle = tiny_gemma.hf_model.base_model.register_forward_pre_hook(
        lambda *a, **k: calls.append(1)
    )
    try:
        resumed = extract(
            tiny_gemma, prompts, shard_size=4, batch_size=3, cache_root=killed_root, progress=False
        )
    finally:
        handle.remove()
    fresh = extract(
        tiny_gemma,
        prompts,
        shard_size=4,
        batch_size=3,
        cache_root=tmp_path / "fresh",
        progress=False,
    )
    assert len(calls) < 10 * 2  # resumed: fewer than all 10 shards' worth of batches
    assert _shard_digests(resumed) == _shard_digests(fresh)
    assert len(_shard_digests(fresh)) == 10
    for layer in fresh.layers:
        assert torch.equal(resumed.get(layer), fresh.get(layer))
    resumed.verify()


def test_cache_cli_extracts_a_builtin_dataset(tmp_path, capsys):
    from probes.cli.app import main

    args = ["cache", "--model", "tiny-gemma3", "--dataset", "age", "--size", "16"]
    assert main([*args, "--out", str(tmp_path), "--layers", "0,2", "--position", "suffix"]) == 0
    out = capsys.readouterr().out
    assert "store:" in out and "rows 16" in out
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    store = ActivationStore.open(folder)
    assert store.request["position"]["suffix"] == " I think the age of this user is"
    assert set(store.labels) == {"child", "adolescent", "adult", "older_adult"}
    assert store.column("group")[0] is not None
    assert main(["cache", "--model", "tiny-gemma3", "--dataset", "no_such_set"]) == 2
    assert main([*args, "--out", str(tmp_path), "--layers", "7"]) == 2
