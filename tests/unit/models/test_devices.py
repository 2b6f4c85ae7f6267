"""Devices: dtype defaults, batch sizes from free memory, shrinking on out-of-memory (simulated
on CPU), and a model dispatched by accelerate with layers offloaded to disk, whose store must
equal the one-device store byte for byte."""

from __future__ import annotations

import pytest
import torch

from probes.behavior.scoring import next_token_logprobs_at
from probes.cache import extract
from probes.errors import ProbesError
from probes.models.architectures import save_tiny_architecture
from probes.models.devices import (
    DEFAULT_CPU_BATCH,
    default_dtype,
    default_store_dtype,
    free_memory_batch_size,
    is_out_of_memory,
    shrinking_batches,
)
from probes.models.loading import load_model

PROMPTS = [f"prompt number {i} says {'word ' * (i % 5)}" for i in range(11)]


def test_dtype_defaults():
    assert default_dtype(torch.device("cpu")) == torch.float32
    assert load_model("tiny-gpt2", device="cpu").dtype == torch.float32
    assert default_store_dtype(torch.bfloat16) == "bfloat16"
    assert default_store_dtype(torch.float16) == "float16"
    assert default_store_dtype(torch.float32) == "float32"


def test_batch_size_follows_free_memory():
    cpu = torch.device("cpu")
    assert free_memory_batch_size(cpu, 64, 100) == DEFAULT_CPU_BATCH
    gpu = torch.device("cuda")
    small = free_memory_batch_size(gpu, 4096, 512, free_bytes=2 * 2**30)
    large = free_memory_batch_size(gpu, 4096, 512, free_bytes=40 * 2**30)
    assert 1 <= small < large <= 256
    assert free_memory_batch_size(gpu, 4096, 4096, free_bytes=2**20) == 1


def _oom_above(limit: int, calls: list[int]):
    def run(chunk: list[int]) -> None:
        if len(chunk) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        calls.extend(chunk)

    return run


def test_out_of_memory_halves_the_batch_and_retries_the_same_rows():
    calls: list[int] = []
    shrinks: list[int] = []
    final = shrinking_batches(list(range(37)), 16, _oom_above(3, calls), shrinks.append)
    assert final == 2 and shrinks == [8, 4, 2]
    assert calls == list(range(37))  # every row once, in order
    with pytest.raises(ProbesError, match="batch of one") as info:
        shrinking_batches([0, 1], 4, _oom_above(0, []))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):  # anything else is not swallowed

        def broken(chunk):
            raise ValueError("not memory")

        shrinking_batches([0], 1, broken)
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_extraction_survives_out_of_memory_with_the_store_of_the_smaller_batch(
    tiny_gemma, tmp_path, capsys
):
    def pretend_small_gpu(module, args, kwargs):
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    handle = tiny_gemma.hf_model.base_model.register_forward_pre_hook(
        pretend_small_gpu, with_kwargs=True
    )
    try:
        shrunk = extract(tiny_gemma, PROMPTS, batch_size=16, cache_root=tmp_path / "a")
    finally:
        handle.remove()
    assert "batch size now 2" in capsys.readouterr().err
    direct = extract(tiny_gemma, PROMPTS, batch_size=2, cache_root=tmp_path / "b", shard_size=256)
    for layer in range(tiny_gemma.n_layers):
        assert torch.equal(shrunk.get(layer), direct.get(layer))


def test_auto_batch_size_is_accepted_and_bad_ones_are_one_line(tiny_gpt2, tmp_path):
    store = extract(tiny_gpt2, PROMPTS[:3], batch_size="auto", cache_root=tmp_path)
    assert store.get(0).shape == (3, tiny_gpt2.d_model)
    with pytest.raises(ProbesError, match="batch_size"):
        extract(tiny_gpt2, PROMPTS[:3], batch_size=0, cache_root=tmp_path)


@pytest.mark.slow
def test_disk_offloaded_model_gives_the_same_store_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home"))
    folder = save_tiny_architecture("llama", tmp_path / "llama")
    whole = load_model(str(folder), device="cpu")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "lm_head": "disk",
    }
    # a fresh fingerprint cache: the offloaded model's weights are hashed, not looked up
    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home2"))
    split = load_model(str(folder), device_map=device_map, offload_folder=tmp_path / "offload")
    assert split.hf_model.hf_device_map["model.layers.1"] == "disk"
    assert any(p.device.type == "meta" for p in split.hf_model.parameters())  # really offloaded
    # the fingerprint read the offloaded weights back from disk, not the meta placeholders
    assert split.fingerprint == whole.fingerprint and split.device == torch.device("cpu")
    assert len(list((tmp_path / "home2" / "fingerprints").iterdir())) == 1
    a = extract(whole, PROMPTS, batch_size=4, cache_root=tmp_path / "c1", progress=False)
    b = extract(split, PROMPTS, batch_size=4, cache_root=tmp_path / "c2", progress=False)
    assert a.path.name == b.path.name  # the same request
    shards = sorted(p.name for p in a.path.glob("*.safetensors"))
    assert shards
    for name in shards:
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes()
    # scoring through the offloaded head agrees too
    ids = [[5, 9, 40]] * 3
    for x, y in zip(
        next_token_logprobs_at(whole, PROMPTS[:3], ids),
        next_token_logprobs_at(split, PROMPTS[:3], ids),
        strict=True,
    ):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


def test_device_and_device_map_together_is_one_line(tmp_path):
    folder = save_tiny_architecture("gpt2", tmp_path / "gpt2")
    with pytest.raises(ProbesError, match="either device or device_map"):
        load_model(str(folder), device="cpu", device_map="auto")
    with pytest.raises(ProbesError, match="GPUs"):
        load_model(str(folder), n_devices=64)


def test_cli_cache_takes_a_device_map_and_auto_batches(tmp_path, capsys, monkeypatch):
    from probes.cli.app import main

    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home"))
    folder = save_tiny_architecture("gpt2", tmp_path / "gpt2")
    args = ["cache", "--model", str(folder), "--dataset", "dialect_us_uk", "--size", "8"]
    assert main([*args, "--device-map", '{"": "cpu"}', "--batch-size", "auto"]) == 0
    assert "rows 8" in capsys.readouterr().out
    assert main([*args, "--device-map", "{not json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device-map is not valid JSON" in err and "\n" not in err


def test_a_model_built_in_memory_is_wrapped_as_loaded(tmp_path):
    from probes.models.architectures import build_tiny_architecture
    from probes.models.loading import wrap_hf_model

    hf, tok = build_tiny_architecture("llama")
    model = wrap_hf_model(hf.to(torch.bfloat16), tok, "in-memory-llama", "given-fingerprint")
    assert model.fingerprint == "given-fingerprint" and model.dtype == torch.bfloat16
    store = extract(model, PROMPTS[:4], cache_root=tmp_path, progress=False)
    assert store.request["dtype"] == "bfloat16"  # a half-precision model stores its own dtype
    assert store.get(1).dtype == torch.bfloat16
