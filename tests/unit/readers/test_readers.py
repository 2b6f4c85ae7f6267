"""Reader bundles on the tiny Gemma: fitted from real stores, saved and read back, cached by
content, refused for other weights, and written by `probes readers train`."""

from __future__ import annotations

import json

import pytest
import torch

from probes.cache.positions import PositionSpec
from probes.cli import main
from probes.errors import ProbesError
from probes.readers import ReaderBundle, chat_frame, train_readers
from probes.readers.train import choose_layer


@pytest.fixture(scope="module")
def bundle(tiny_gemma):
    return train_readers(tiny_gemma, ("dialect_us_uk",), size=48, progress=False)


def test_a_bundle_holds_both_probes_directions_and_scores(bundle, tiny_gemma, tmp_path):
    reader = bundle.readers["dialect"]
    assert bundle.fingerprint == tiny_gemma.fingerprint and bundle.frame == "chat"
    assert reader.classes == ("uk", "us") and reader.suffix.endswith("dialect of this user is")
    assert reader.directions.shape == (tiny_gemma.n_layers, 2, tiny_gemma.d_model)
    assert bool((reader.typical_norms > 0).all())
    for key in ("reading_accuracy", "control_accuracy", "majority_accuracy"):
        assert 0.0 <= reader.scores[key] <= 1.0
    bundle.save(tmp_path)
    again = ReaderBundle.load(tmp_path)
    assert again.summary() == bundle.summary()
    x = torch.randn(3, tiny_gemma.d_model)
    assert torch.equal(
        again.readers["dialect"].reading.predict_proba(x), reader.reading.predict_proba(x)
    )
    assert torch.equal(again.readers["dialect"].directions, reader.directions)
    meta = json.loads((tmp_path / "readers.json").read_text())
    assert meta["model"]["fingerprint"] == tiny_gemma.fingerprint
    assert meta["readers"][0]["dataset_hash"] and meta["readers"][0]["reading_layer"] is not None


def test_a_bundle_for_other_weights_is_refused(bundle, tiny_gpt2, tmp_path, capsys):
    with pytest.raises(ProbesError, match=bundle.fingerprint):
        bundle.check_model(tiny_gpt2.fingerprint, tiny_gpt2.name)
    bundle.save(tmp_path / "b")
    code = main(["dashboard", "--model", "tiny-gpt2", "--readers", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and bundle.fingerprint in err[-1] and tiny_gpt2.fingerprint in err[-1]


def test_a_tampered_bundle_is_refused(bundle, tmp_path):
    bundle.save(tmp_path)
    blob = (tmp_path / "readers.safetensors").read_bytes()
    (tmp_path / "readers.safetensors").write_bytes(blob[:-4] + b"\0\0\0\0")
    with pytest.raises(ProbesError, match="checksum"):
        ReaderBundle.load(tmp_path)
    with pytest.raises(ProbesError, match="no reader bundle"):
        ReaderBundle.load(tmp_path / "nowhere")


def test_the_layer_is_the_earliest_near_the_best_held_out_accuracy():
    from types import SimpleNamespace

    rows = [{"layer": k, "accuracy": a} for k, a in enumerate((0.5, 0.79, 0.8, 0.81, 0.7))]
    assert choose_layer(SimpleNamespace(rows=rows)) == 1
    assert choose_layer(SimpleNamespace(rows=rows), tolerance=0.0) == 3


def test_the_frame_follows_the_tokenizer(tiny_gemma):
    assert chat_frame(tiny_gemma.tokenizer) == "chat"
    assert chat_frame(type("T", (), {"chat_template": "{{ messages }}"})()) == "template"


def test_cached_readers_fit_once_then_reuse(tiny_gemma, tmp_path):
    from probes.pipeline.readers import cached_readers

    first, folder, reused = cached_readers(
        tiny_gemma, ("dialect_us_uk",), size=48, root=tmp_path, progress=False
    )
    second, folder2, reused2 = cached_readers(
        tiny_gemma, ("dialect_us_uk",), size=48, root=tmp_path, progress=False
    )
    assert (reused, reused2) == (False, True) and folder == folder2
    assert second.summary() == first.summary()


def test_readers_train_writes_a_bundle(tmp_path, capsys):
    out = tmp_path / "bundle"
    args = [
        "readers",
        "train",
        "--model",
        "tiny-gemma3",
        "--attributes",
        "dialect_us_uk",
        "--size",
        "48",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "dialect" in capsys.readouterr().out
    assert ReaderBundle.load(out).readers["dialect"].classes == ("uk", "us")
    assert (
        main(
            [
                "readers",
                "train",
                "--model",
                "tiny-gemma3",
                "--attributes",
                "nope",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_a_port_in_use_is_one_line(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["dashboard", "--model", "tiny-gemma3", "--port", str(port)]) == 2
    assert "pass --port" in capsys.readouterr().err


def test_one_pass_reads_the_control_at_the_prompts_last_token(tiny_gemma, tmp_path):
    """The control probe's rows, read inside prompt + suffix, are the prompt's own last-token
    activations (causal attention), and the reading rows are the suffix's last token."""
    from probes.cache.extraction import extract_dataset
    from probes.datasets import RenderSpec, load_dataset, render
    from probes.models.batching import encode
    from probes.readers.bundle import reading_suffix
    from probes.readers.train import prompt_ends

    dataset = load_dataset("age", size=12)
    plain = RenderSpec("chat")
    suffixed = RenderSpec("chat", suffix=reading_suffix(dataset.attribute))
    ends = prompt_ends(tiny_gemma, dataset, plain, suffixed)
    lengths = [len(ids) for ids in encode(tiny_gemma.tokenizer, render(dataset, plain))]
    assert list(ends) == [n - 1 for n in lengths]  # the suffix never merges with the prompt
    common = {"layers": "all", "progress": False, "cache_root": tmp_path}
    alone = extract_dataset(tiny_gemma, dataset, render_spec=plain, **common)
    inside = extract_dataset(
        tiny_gemma,
        dataset,
        render_spec=suffixed,
        position=PositionSpec("index", indices=ends),
        **common,
    )
    for layer in alone.layers:
        torch.testing.assert_close(inside.get(layer), alone.get(layer), atol=1e-5, rtol=1e-4)


def test_reader_keeps_both_curves_and_draws_them(bundle, tiny_gemma):
    import dataclasses

    from probes.errors import ProbesError
    from probes.viz import plot_reader_curves

    reader = bundle.readers["dialect"]
    curves = reader.scores["by_layer"]
    assert [r["layer"] for r in curves["reading"]] == list(range(tiny_gemma.n_layers))
    row = next(r for r in curves["reading"] if r["layer"] == reader.reading.layer)
    assert row["accuracy"] == reader.scores["reading_accuracy"]
    fig = plot_reader_curves(reader)
    assert [t.name for t in fig.data if t.name] == [
        "reading probe (end of read-out suffix)",
        "control probe (last prompt token)",
    ]
    old = dataclasses.replace(
        reader, scores={k: v for k, v in reader.scores.items() if k != "by_layer"}
    )
    with pytest.raises(ProbesError, match="no per-layer scores"):
        plot_reader_curves(old)
