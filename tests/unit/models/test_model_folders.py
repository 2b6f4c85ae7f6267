"""What a model folder may make the suite do: no code without trust_remote_code, no pickles
without allow_pickle, and both always passed to transformers explicitly (issue 18)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from probes.errors import ModelNotFoundError
from probes.models.loading import load_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from probes.models.tiny import build_tiny_model

    model, tokenizer, _ = build_tiny_model("tiny-gpt2")
    path = tmp_path_factory.mktemp("model") / "tiny-gpt2"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_transformers_is_told_explicitly_not_to_run_code(folder, monkeypatch, tmp_path):
    import transformers

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setenv("PROBES_HOME", str(tmp_path))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    model = load_model(str(folder), device="cpu")
    assert seen and seen[0]["trust_remote_code"] is False and seen[0]["use_safetensors"] is True
    assert model.n_layers == 3


def test_custom_code_needs_the_flag(folder, tmp_path):
    remote = shutil.copytree(folder, tmp_path / "remote")
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling.Evil"}
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotFoundError, match="--trust-remote-code"):
        load_model(str(remote), device="cpu")
    (remote / "config.json").write_text((folder / "config.json").read_text())
    (remote / "modeling.py").write_text("raise SystemExit('ran')\n")
    with pytest.raises(ModelNotFoundError, match=r"Python files \(modeling.py\)"):
        load_model(str(remote), device="cpu")


def test_pickle_weights_need_the_flag_and_then_load_the_same_model(folder, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home"))
    pickled = shutil.copytree(folder, tmp_path / "pickled")
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="--allow-pickle"):
        load_model(str(pickled), device="cpu")
    opted_in = load_model(str(pickled), device="cpu", allow_pickle=True)
    assert opted_in.fingerprint == load_model(str(folder), device="cpu").fingerprint
