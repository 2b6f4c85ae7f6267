from __future__ import annotations

import json
import subprocess
import sys

import pytest

from probes.cli import main


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


def test_run_on_tiny_model_writes_results(tmp_path, capsys):
    assert main(["run", "--model", "tiny-gemma3", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"]["name"] == "tiny-gemma3"
    assert results["stages"]["dialect_first_look"]["n_pairs"] >= 3
