from __future__ import annotations

import json
import subprocess
import sys

import pytest

from probes.cli.app import main


def test_every_subcommand_has_help(capsys):
    for command in ["models", "info", "run"]:
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        assert "usage" in capsys.readouterr().out


def test_bad_spec_prints_one_line_and_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "probes.cli", "info", "no-such-model"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "Traceback" not in proc.stderr and "no-such-model" in proc.stderr


def test_usage_error_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_info_and_models_on_tiny(capsys):
    assert main(["info", "tiny-gpt2"]) == 0
    out = capsys.readouterr().out
    assert "n_layers" in out and "fingerprint" in out
    assert main(["models"]) == 0
    assert "gemma-3-270m" in capsys.readouterr().out


def test_run_on_tiny_model_writes_results_and_figures(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home"))
    config = tmp_path / "run.toml"
    config.write_text(
        '[probes]\nattributes = ["dialect_us_uk", "age"]\nsize = 48\nn_boot = 50\n'
        "[mediation]\npairs = 3\nn_boot = 50\nn_perm = 50\n"
        "[audit]\nmax_items = 4\nn_boot = 50\nn_perm = 50\n"
    )
    out = tmp_path / "run"
    args = ["run", "--model", "tiny-gemma3", "--config", str(config), "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["name"] == "tiny-gemma3"
    assert results["stages"]["dialect_first_look"]["n_pairs"] >= 3
    summary = results["stages"]["probes"]["summary"]
    assert [row["attribute"] for row in summary] == ["dialect", "age"]
    assert results["stages"]["probes"]["reading_probe"] is None  # the readers stage has it
    for name in ["probe_dialect", "probe_age", "probe_overview", "reader_dialect", "reader_age"]:
        assert (out / "figures" / f"{name}.html").is_file()
    assert "best layer" in capsys.readouterr().out
    # every later stage ran and the report holds a section for each
    stages = results["stages"]
    assert {"interventions", "mediation", "audit", "readers"} <= stages.keys()
    from probes.readers import ReaderBundle

    bundle = ReaderBundle.load(out / "readers")  # the dashboard's bundle, in the run folder
    assert set(bundle.readers) == {"dialect", "age"} and bundle.meta["size"] == 48
    assert stages["interventions"]["steering"]["sweep"]["rows"]
    assert set(stages["mediation"]) == {"dialect", "proficiency", "echo_chamber"}
    report = (out / "report.html").read_text()
    readers = {r["attribute"]: r for r in stages["readers"]["summary"]}
    curve = readers["dialect"]["by_layer"]["reading"]
    assert [r["layer"] for r in curve] == list(range(results["model"]["n_layers"]))
    for title in (
        "Probes:",
        "Steering dialect",
        "Mediation: dialect",
        "Concept erasure",
        "Readers:",
    ):
        assert title in report


def test_quick_run_says_it_chose_bfloat16_and_runs_in_it(tmp_path, capsys, monkeypatch):
    from probes.models import devices

    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(devices, "native_bf16_cpu", lambda: True)
    config = tmp_path / "run.toml"
    config.write_text('stages = ["first_look"]\n')
    args = ["run", "--model", "tiny-gemma3", "--device", "cpu", "--quick", "--config", str(config)]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["model"]["dtype"] == "bfloat16" and results["config"]["dtype"] == "bfloat16"
    assert "--quick runs the model in bfloat16" in capsys.readouterr().err
    assert main([*args, "--dtype", "float32", "--out", str(tmp_path / "run32")]) == 0
    results = json.loads((tmp_path / "run32" / "results.json").read_text())
    assert results["model"]["dtype"] == "float32"
    assert "bfloat16" not in capsys.readouterr().err


def test_run_builds_typed_options(monkeypatch):
    from probes.pipeline import run as run_module

    seen = []
    monkeypatch.setattr(run_module, "run_main_job", lambda options: seen.append(options) or 0)
    argv = ["run", "--model", "tiny-gemma3", "--device", "cpu", "--quick", "--fresh"]
    assert main([*argv, "--dtype", "float32", "--out", "somewhere"]) == 0
    assert seen == [
        run_module.RunOptions(
            model="tiny-gemma3",
            device="cpu",
            dtype="float32",
            config=None,
            quick=True,
            out="somewhere",
            fresh=True,
        )
    ]


def test_cache_root_is_a_store_for_probe_until_it_holds_two(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home"))
    root = tmp_path / "acts"
    cache = ["cache", "--model", "tiny-gemma3", "--dataset", "age", "--size", "16"]
    assert main([*cache, "--out", str(root), "--layers", "0,2"]) == 0
    assert "float32" in capsys.readouterr().out
    probe = ["probe", "--store", str(root), "--n-boot", "20", "--no-bow"]
    assert main([*probe, "--out", str(tmp_path / "probe")]) == 0
    assert (tmp_path / "probe" / "results.json").is_file()
    capsys.readouterr()
    # --dtype is the model's; the store's is --store-dtype
    assert main([*cache, "--out", str(root), "--layers", "1", "--store-dtype", "float16"]) == 0
    assert "float16" in capsys.readouterr().out
    assert main([*probe, "--out", str(tmp_path / "probe2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 stores" in err and "Traceback" not in err
    assert all(p.name in err for p in root.iterdir() if p.is_dir())
