"""`probes vector export` / `import` on the tiny Gemma: files written and read back, directions
saved for the other commands, a sweep over imported directions, and one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

from probes.cli.app import main
from probes.directions import Direction
from probes.vectors import read_control_vector


def _save(folder, layer, *, site="resid_post", attribute="dialect", seed=0):
    gen = torch.Generator().manual_seed(seed)
    d = Direction(
        torch.randn(64, generator=gen),
        layer=layer,
        site=site,
        method="mean_diff",
        attribute=attribute,
        source="us",
        target="uk",
        typical_norm=2.5,
    )
    d.save(folder / f"direction_{attribute}_layer{layer}")
    return d


def _one_line_error(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and needle in err


@pytest.mark.parametrize("fmt", ["gguf", "safetensors"])
def test_export_a_run_folder_then_import_it_back(tmp_path, capsys, fmt):
    run = tmp_path / "run" / "figures"
    saved = [_save(run, 1), _save(run, 2, seed=1)]
    out = tmp_path / f"dialect.{fmt}"
    argv = ["vector", "export", str(tmp_path / "run"), "--strength", "0.5", "--format", fmt]
    assert main([*argv, "--out", str(out), "--model", "tiny-gemma3"]) == 0
    printed = capsys.readouterr().out
    assert "resid_post of layer 2 -> direction.2" in printed and f"wrote {out}" in printed
    cv = read_control_vector(out)
    assert sorted(cv.layers) == [1, 2] and cv.strength == 0.5

    back = tmp_path / "back"
    argv = ["vector", "import", str(out), "--model", "tiny-gemma3", "--out", str(back)]
    assert main(argv) == 0
    assert "exported by the suite at strength 0.5" in capsys.readouterr().out
    for d in saved:
        loaded = Direction.load(back / f"direction_dialect_layer{d.layer}")
        assert torch.equal(loaded.vector, d.vector) and loaded.typical_norm == d.typical_norm


def test_import_sweeps_the_imported_directions(tmp_path, capsys):
    _save(tmp_path, 2)
    gguf = tmp_path / "x.gguf"
    argv = ["vector", "export", str(tmp_path / "direction_dialect_layer2.json"), "--strength"]
    assert main([*argv, "1", "--out", str(gguf), "--model", "tiny-gemma3"]) == 0
    out = tmp_path / "sweep"
    argv = ["vector", "import", str(gguf), "--model", "tiny-gemma3", "--out", str(out)]
    assert main([*argv, "--sweep=-2,2", "--items", "4"]) == 0
    printed = capsys.readouterr().out
    assert "sweep on 4 dialect items" in printed and "perplexity of neutral text" in printed
    results = json.loads((out / "results.json").read_text())
    kinds = {(r["kind"], r["strength"]) for r in results["sweep"]["rows"]}
    assert kinds == {(k, s) for k in ("direction", "random") for s in (-2.0, 2.0)}
    assert results["perplexity"]["perplexity_after"] != results["perplexity"]["perplexity_before"]


def test_refusals_are_one_line(tmp_path, capsys):
    _save(tmp_path / "a", 1)
    _save(tmp_path / "a", 2, attribute="age")
    _save(tmp_path / "b", 2, site="attn_out")
    out = str(tmp_path / "x.gguf")
    export = ["vector", "export", "--strength", "1", "--out", out, "--model", "tiny-gemma3"]
    _one_line_error(capsys, [*export, str(tmp_path / "a")], "several attributes")
    _one_line_error(capsys, [*export, str(tmp_path / "b")], "block outputs only")
    _one_line_error(capsys, [*export, str(tmp_path / "nothing")], "not a saved direction")
    _save(tmp_path / "c", 3)
    assert main([*export, str(tmp_path / "c")]) == 0
    capsys.readouterr()
    _one_line_error(capsys, ["vector", "import", out, "--model", "tiny-gpt2"], "has 3 layers")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    _one_line_error(
        capsys, ["vector", "import", str(tmp_path / "junk.safetensors")], "not a readable"
    )
