from __future__ import annotations

import pytest

from probes.cli.app import main
from probes.errors import ConfigError
from probes.pipeline.config import QUICK_OVERRIDES, load_config


def test_defaults_and_quick():
    config = load_config()
    assert config.model == "gemma-3-270m" and "probes" in config.stages
    quick = load_config(quick=True)
    assert quick.probes.size == QUICK_OVERRIDES["size"]
    assert config.audit.mitigation and not quick.audit.mitigation  # quick skips the 2nd pass
    # the run measures damage as KL in every sweep cell; `probes steer` adds perplexity/samples
    assert not config.interventions.damage_and_samples
    assert config.interventions.layers == "auto-small"
    assert "transfer" in config.stages and config.transfer.positions == ("last", "mean")
    assert quick.transfer.conversation_size < config.transfer.conversation_size


def test_quick_runs_in_bfloat16_only_where_the_cpu_multiplies_it_natively(tmp_path, monkeypatch):
    from probes.models import devices

    monkeypatch.setattr(devices, "native_bf16_cpu", lambda: True)
    assert load_config(quick=True, device="cpu").dtype == "bfloat16"
    assert load_config(device="cpu").dtype is None  # the full run keeps float32 on a CPU
    assert load_config(quick=True, device="cpu", dtype="float32").dtype == "float32"
    path = tmp_path / "run.toml"
    path.write_text('dtype = "float16"\n')
    assert load_config(path, quick=True, device="cpu").dtype == "float16"  # the file's wins
    with pytest.raises(ConfigError, match="unknown device"):  # checked before the dtype
        load_config(quick=True, device="tpu")
    monkeypatch.setattr(devices, "native_bf16_cpu", lambda: False)  # emulated: slower, keep fp32
    assert load_config(quick=True, device="cpu").dtype is None


def test_native_bf16_detection_agrees_with_torch():
    import torch

    from probes.models.devices import native_bf16_cpu, quick_dtype

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native_bf16_cpu() == native
    assert quick_dtype(torch.device("cpu")) == ("bfloat16" if native else None)
    assert quick_dtype(torch.device("cuda")) is None  # CUDA's default is bfloat16 already


def test_a_config_value_wins_over_quick(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[probes]\nsize = 300\nreading_attribute = "dialect_us_uk"\n')
    quick = load_config(path, quick=True)
    assert quick.probes.size == 300 and quick.probes.reading_attribute == "dialect_us_uk"
    assert quick.probes.folds == QUICK_OVERRIDES["folds"]  # what the file leaves out is quick
    assert load_config(quick=True).probes.reading_attribute is None


def test_toml_values_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'stages = ["probes"]\n[probes]\nattributes = ["age", "gender"]\nsize = 80\nC = 0.5\n'
    )
    config = load_config(path, model="tiny-gpt2")
    assert config.stages == ("probes",) and config.model == "tiny-gpt2"
    assert config.probes.attributes == ("age", "gender") and config.probes.C == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[probes]\nsizes = 3\n", "unknown key probes.sizes"),
        ("[probes]\nsize = -3\n", "probes.size must be"),
        ('stages = ["everything"]\n', "unknown stage"),
        ('[probes]\nattributes = ["astrology"]\n', "unknown dataset"),
        ("[probes]\nfolds = 1\n", "at least 2"),
        ("this is = = not toml", "not valid TOML"),
        ('[audit]\nmitigation = "yes"\n', "audit.mitigation must be true or false"),
        (
            "[interventions]\ndamage_and_samples = 1\n",
            "interventions.damage_and_samples must be true or false",
        ),
        ("[interventions]\nerase_test_rows = 0\n", "erase_test_rows must be a positive"),
        ('[probes]\nattributes = ["age"]\nreading_attribute = "gender"\n', "reading_attribute"),
        ("[probes]\nworkers = 0\n", "probes.workers must be a positive integer"),
        ('[transfer]\npositions = ["first"]\n', "transfer.positions must list"),
        ('[transfer]\nattributes = ["astrology"]\n', "transfer.attributes must be among"),
        ("[transfer]\nframes = []\n", "transfer.frames must list"),
        ('[transfer]\nlabel_map = ["teen"]\n', "transfer.label_map: --label-map takes"),
        ('[transfer]\ntrain_files = ["age=/no/such.jsonl"]\n', "transfer.train_files takes"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_bad_config_via_cli_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[probes]\nsizes = 3\n")
    assert main(["run", "--config", str(path), "--model", "tiny-gpt2", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "results.json").exists()
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2


def test_the_readers_section(tmp_path):
    assert load_config().readers.attributes == ()  # every probed attribute
    assert load_config(quick=True).readers.attributes == ("dialect_us_uk",)
    path = tmp_path / "run.toml"
    path.write_text('[readers]\nattributes = ["age", "gender"]\nsize = 64\n')
    config = load_config(path, quick=True)
    assert config.readers.attributes == ("age", "gender") and config.readers.size == 64
    path.write_text('[readers]\nattributes = ["shoe_size"]\n')
    with pytest.raises(ConfigError, match=r"readers\.attributes"):
        load_config(path)
