from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from probes.errors import ModelNotFoundError, ProbesError
from probes.models import loading as models


def test_tiny_models_expose_bridge_and_facts(tiny_model):
    assert tiny_model.n_layers in (3, 4)
    assert tiny_model.d_model == 64
    assert len(tiny_model.fingerprint) == 16
    assert "blocks.0.hook_in" in tiny_model.bridge.hook_dict
    ids = tiny_model.tokenizer("hello").input_ids
    assert ids[0] == tiny_model.tokenizer.bos_token_id


def test_tiny_model_is_deterministic_and_fingerprint_tracks_weights():
    a = models.load_model("tiny-gemma3")
    b = models.load_model("tiny-gemma3")
    assert a.fingerprint == b.fingerprint
    with torch.no_grad():
        b.hf_model.lm_head.weight[0, 0] += 1.0
    assert models._hash_state_dict(b.hf_model) != a.fingerprint


def test_unknown_spec_is_a_one_line_error():
    with pytest.raises(ModelNotFoundError) as info:
        models.load_model("no-such-model")
    assert "\n" not in str(info.value)
    assert "no-such-model" in str(info.value)


def test_missing_folder_and_uncached_hub_id_never_download(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        models.load_model(str(tmp_path / "absent"))
    with pytest.raises(ModelNotFoundError, match="not on this machine"):
        models.load_model("someone/not-a-cached-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        models.load_model(str(tmp_path / "empty"))


def test_local_folder_loads_and_fingerprint_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home"))
    from probes.models.tiny import build_tiny_model

    hf, tok, _ = build_tiny_model("tiny-gpt2")
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded = models.load_model(str(tmp_path / "m"))
    assert loaded.n_layers == 3 and loaded.location == str(tmp_path / "m")
    assert loaded.fingerprint == models._hash_state_dict(hf)
    assert len(list((tmp_path / "home" / "fingerprints").iterdir())) == 1


def test_bad_dtype_and_device_are_user_errors():
    with pytest.raises(ProbesError, match="dtype"):
        models.resolve_dtype("int8")
    with pytest.raises(ProbesError, match="device"):
        models.resolve_device("quantum")


_FAKE_CONVERT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from probes.models import loading as models
    from probes.models.tiny import build_tiny_model

    log = Path(sys.argv[1])

    def fake(folder):
        with log.open("a") as handle:
            handle.write("convert\\n")
        time.sleep(1.0)
        hf, tok, _ = build_tiny_model("tiny-gpt2")
        hf.save_pretrained(folder)
        tok.save_pretrained(folder)

    models._convert_gguf_into = fake
    models.convert_embedded(progress=lambda message: None)
    """
)


def test_conversion_is_once_atomic_and_race_free(tmp_path):
    env = {**__import__("os").environ, "PROBES_HOME": str(tmp_path / "home")}
    log = tmp_path / "log.txt"
    script = tmp_path / "fake_convert.py"
    script.write_text(_FAKE_CONVERT)
    procs = [subprocess.Popen([sys.executable, str(script), str(log)], env=env) for _ in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert log.read_text().count("convert") == 1
    folder = tmp_path / "home" / "models" / "gemma-3-270m"
    assert models.is_converted(folder)
    marker = json.loads((folder / "probes_complete.json").read_text())
    assert "config.json" in marker["files"]
    # a third call finds it done and converts nothing
    subprocess.run([sys.executable, str(script), str(log)], env=env, check=True, timeout=120)
    assert log.read_text().count("convert") == 1


def test_half_written_conversion_is_detected_and_redone(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBES_HOME", str(tmp_path))
    folder = models.embedded_model_dir()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # a killed conversion: files but no marker
    stale_tmp = folder.parent / ".gemma-3-270m.tmp-dead"
    stale_tmp.mkdir()
    assert not models.is_converted(folder)
    calls = []

    def fake(target: Path) -> None:
        from probes.models.tiny import build_tiny_model

        calls.append(target)
        hf, tok, _ = build_tiny_model("tiny-gpt2")
        hf.save_pretrained(target)
        tok.save_pretrained(target)

    monkeypatch.setattr(models, "_convert_gguf_into", fake)
    assert models.convert_embedded(progress=lambda m: None) == folder
    assert len(calls) == 1 and models.is_converted(folder)
    assert not stale_tmp.exists()
    # a marker naming a file that vanished is incomplete too
    (folder / "config.json").unlink()
    assert not models.is_converted(folder)
