"""Control-vector files: bitwise round trips, a repeng-style file read back, llama.cpp's layer
convention checked against an independent hook on the decoder block's output, and files for
other models refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGUFWriter
from safetensors.torch import save_file

from probes.behavior.scoring import next_token_logprobs
from probes.directions import Direction
from probes.errors import ProbesError
from probes.interventions.hooks import steer
from probes.vectors import (
    ModelShape,
    check_fits,
    control_layer,
    read_control_vector,
    write_control_vector,
)

PROMPTS = ["Hello there my friend, how are you today?", "I love the colour of autumn."]


def _direction(d_model: int, layer: int, site: str = "resid_post", seed: int = 0) -> Direction:
    gen = torch.Generator().manual_seed(seed)
    return Direction(
        torch.randn(d_model, generator=gen),
        layer=layer,
        site=site,
        method="mean_diff",
        attribute="dialect",
        source="us",
        target="uk",
        typical_norm=3.0 + layer,
        meta={"store": "s", "position": "last"},
    )


@pytest.mark.parametrize("fmt", ["gguf", "safetensors"])
def test_export_then_import_gives_the_same_directions_bitwise(tmp_path, tiny_gemma, fmt):
    band = [_direction(64, 1), _direction(64, 3, "resid_pre", seed=1)]
    path = write_control_vector(tmp_path / f"band.{fmt}", band, 0.7, tiny_gemma, fmt)
    cv = read_control_vector(path)
    assert cv.source_format == fmt and cv.strength == 0.7 and cv.model_hint == "gemma3"
    assert cv.model["n_layers"] == tiny_gemma.n_layers
    for before, after in zip(band, cv.directions, strict=True):
        assert torch.equal(before.vector, after.vector) and after.vector.dtype == torch.float32
        for name in ("layer", "site", "method", "attribute", "source", "target", "meta"):
            assert getattr(before, name) == getattr(after, name)
        assert before.typical_norm == after.typical_norm
    # resid_pre of block 3 is the output of block 2; each tensor is the whole edit at scale 1
    assert sorted(cv.layers) == [1, 2]
    assert torch.equal(cv.layers[1], band[0].scaled(0.7).float())
    assert torch.equal(cv.layers[2], band[1].scaled(0.7).float())


def _gguf_reader_keys(path):
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return reader, {t.name for t in reader.tensors}


def test_gguf_has_llama_cpp_layout(tmp_path, tiny_gemma):
    path = _direction(64, 2).to_gguf(tmp_path / "one.gguf", 0.5, tiny_gemma)
    reader, names = _gguf_reader_keys(path)
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    assert names == {"direction.2"}
    count = reader.fields["controlvector.layer_count"]
    assert int(count.parts[count.data[0]][0]) == 1
    tensor = reader.tensors[0]
    assert tensor.tensor_type.name == "F32" and list(tensor.shape) == [64]


def _steered_by_block_outputs(model, layers: dict[int, torch.Tensor], scale: float):
    """Next-token log-probs with ``scale x layers[N]`` added to decoder block N's output by a
    plain torch forward hook: what llama.cpp's ``build_cvec(cur, il)`` does, without the
    suite's hook points."""
    blocks = model.hf_model.base_model.layers
    handles = []
    for n, vector in layers.items():

        def hook(module, args, output, vector=vector):
            if isinstance(output, tuple):
                return (output[0] + scale * vector, *output[1:])
            return output + scale * vector

        handles.append(blocks[n].register_forward_hook(hook))
    try:
        return next_token_logprobs(model, PROMPTS)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("site", ["resid_post", "resid_pre"])
def test_scale_c_in_llama_convention_is_steer_at_c_times_strength(tmp_path, tiny_gemma, site):
    band = [_direction(64, 2, site), _direction(64, 3, site, seed=4)]
    strength, scale = 0.4, 1.5
    cv = read_control_vector(write_control_vector(tmp_path / "b.gguf", band, strength, tiny_gemma))
    plain = next_token_logprobs(tiny_gemma, PROMPTS)
    engine_like = _steered_by_block_outputs(tiny_gemma, cv.layers, scale)
    with steer(tiny_gemma, band, scale * strength):
        suite = next_token_logprobs(tiny_gemma, PROMPTS)
    assert (engine_like - plain).abs().max() > 1e-2  # the edit does something
    torch.testing.assert_close(suite, engine_like, rtol=1e-4, atol=1e-4)
    # one layer off is a different edit: the convention is not vacuous
    shifted = {n + 1: v for n, v in cv.layers.items() if n + 1 < tiny_gemma.n_layers}
    assert (_steered_by_block_outputs(tiny_gemma, shifted, scale) - suite).abs().max() > 1e-3


def _repeng_file(path, vectors: dict[int, np.ndarray], hint: str = "gemma3_text") -> None:
    """A control vector as repeng's ``export_gguf`` writes one."""
    writer = GGUFWriter(path, "controlvector")
    writer.add_string("controlvector.model_hint", hint)
    writer.add_uint32("controlvector.layer_count", len(vectors))
    for layer, vector in vectors.items():
        writer.add_tensor(f"direction.{layer}", vector.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_repeng_file_reads_as_resid_post_directions_with_strength_one_the_file(
    tmp_path, tiny_gemma
):
    rng = np.random.default_rng(0)
    vectors = {layer: rng.normal(size=64) for layer in (1, 2, 3)}
    _repeng_file(tmp_path / "repeng.gguf", vectors)
    cv = read_control_vector(tmp_path / "repeng.gguf")
    check_fits(cv, ModelShape.of(tiny_gemma))
    assert cv.model_hint == "gemma3_text" and cv.model == {} and cv.strength == 1.0
    assert [(d.layer, d.site, d.method) for d in cv.directions] == [
        (n, "resid_post", "imported(gguf)") for n in (1, 2, 3)
    ]
    for d in cv.directions:
        assert np.array_equal(d.vector.numpy(), vectors[d.layer].astype(np.float32))
    with steer(tiny_gemma, list(cv.directions), 1.0):
        suite = next_token_logprobs(tiny_gemma, PROMPTS)
    torch.testing.assert_close(
        suite, _steered_by_block_outputs(tiny_gemma, cv.layers, 1.0), rtol=1e-4, atol=1e-4
    )


def test_per_layer_safetensors_from_another_tool(tmp_path, tiny_gemma):
    tensors = {"layers.0": torch.ones(64), "2": torch.full((1, 64), 2.0, dtype=torch.bfloat16)}
    save_file(tensors, tmp_path / "other.safetensors")
    cv = read_control_vector(tmp_path / "other.safetensors")
    check_fits(cv, ModelShape.of(tiny_gemma))
    assert sorted(cv.layers) == [0, 2] and cv.layers[2].dtype == torch.float32
    assert torch.equal(cv.directions[1].vector, torch.full((64,), 2.0))


@pytest.mark.parametrize(
    ("vectors", "hint", "message"),
    [
        ({1: np.ones(32)}, "gemma3_text", "hidden size 64"),
        ({1: np.ones(64), 7: np.ones(64)}, "gemma3_text", "layer 7"),
        ({1: np.ones(64)}, "llama", "'llama'"),
    ],
)
def test_files_for_another_model_are_refused(tmp_path, tiny_gemma, vectors, hint, message):
    _repeng_file(tmp_path / "f.gguf", vectors, hint)
    with pytest.raises(ProbesError, match=message) as info:
        check_fits(read_control_vector(tmp_path / "f.gguf"), ModelShape.of(tiny_gemma))
    assert "\n" not in str(info.value)


def test_export_for_a_model_with_other_depth_is_refused_on_import(tmp_path, tiny_gemma):
    path = write_control_vector(tmp_path / "x.gguf", [_direction(64, 1)], 1.0, tiny_gemma)
    deeper = ModelShape("gemma3_text", 6, 64, "deeper")
    with pytest.raises(ProbesError, match="4 layers; deeper has 6"):
        check_fits(read_control_vector(path), deeper)


@pytest.mark.parametrize(
    ("layer", "site", "fmt", "message"),
    [
        (0, "resid_post", "gguf", "never applies"),
        (0, "resid_pre", "safetensors", "embedding"),
        (2, "attn_out", "gguf", "block outputs only"),
        (9, "resid_post", "gguf", "4 layers"),
    ],
)
def test_directions_llama_cpp_cannot_hold_are_refused(
    tmp_path, tiny_gemma, layer, site, fmt, message
):
    with pytest.raises(ProbesError, match=message):
        write_control_vector(tmp_path / "x", [_direction(64, layer, site)], 1.0, tiny_gemma, fmt)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_layer_zero_is_fine_in_safetensors(tmp_path, tiny_gemma):
    d = _direction(64, 0)
    assert control_layer(d, lowest=0) == 0
    cv = read_control_vector(
        write_control_vector(tmp_path / "z", [d], 1.0, tiny_gemma, "safetensors")
    )
    assert torch.equal(cv.directions[0].vector, d.vector)


def test_bad_files_are_refused_in_one_line(tmp_path):
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\x00" * 10)
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 40)
    model_file = tmp_path / "model.gguf"
    writer = GGUFWriter(model_file, "gemma3")
    writer.add_tensor("token_embd.weight", np.ones((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    zero = tmp_path / "zero.gguf"
    _repeng_file(zero, {0: np.ones(64)})
    for path, message in [
        (tmp_path / "junk.gguf", "not a readable GGUF"),
        (tmp_path / "pickle.safetensors", "not a readable safetensors"),
        (model_file, "GGUF gemma3, not a controlvector"),
        (zero, "direction.0 is invalid"),
        (tmp_path / "missing.gguf", "cannot read"),
    ]:
        with pytest.raises(ProbesError, match=message) as info:
            read_control_vector(path)
        assert "\n" not in str(info.value)


def test_tensors_edited_after_export_are_read_as_they_are(tmp_path, tiny_gemma):
    from gguf import GGUFReader

    path = write_control_vector(tmp_path / "x.gguf", [_direction(64, 1)], 0.5, tiny_gemma)
    data = bytearray(path.read_bytes())
    offset = GGUFReader(path).tensors[0].data_offset
    data[offset : offset + 4] = np.float32(123.0).tobytes()
    path.write_bytes(bytes(data))
    cv = read_control_vector(path)
    assert cv.model == {} and "differ" in cv.directions[0].meta["note"]
    assert float(cv.directions[0].vector[0]) == 123.0
