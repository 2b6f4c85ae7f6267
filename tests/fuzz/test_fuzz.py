"""Hostile but fair input, table-driven: every case ends with exit 2 and one line on stderr,
no traceback, and no new or changed file (tests/fuzz/cases.py; counts: scripts/fuzz_counts.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.cases import CASES
from tests.fuzz.runner import run_case, snapshot

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = {"info", "cache", "probe", "transfer", "steer", "patch", "generate", "mediate"}
SUBCOMMANDS |= {"audit", "run", "datasets"}


def test_the_table_is_wide():
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)
    assert {c.argv[0] for c in CASES if c.argv} >= SUBCOMMANDS
    assert sum(c.call is not None for c in CASES) >= 10  # the Python API too
    assert {c.kind for c in CASES} == {"code", "store", "fs", "length", "value"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_is_one_clean_line(case, assets, tmp_path):
    outcome = run_case(case, tmp_path / "work", assets)
    assert outcome.verdict == "clean", (
        f"{outcome.verdict}: rc {outcome.rc}, stderr {outcome.stderr!r}, "
        f"changed {outcome.changed}, {outcome.error}"
    )


def _probes(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROBES_HOME": str(cwd / "home")}
    return subprocess.run(
        [sys.executable, "-m", "probes.cli", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _one_clean_line(result: subprocess.CompletedProcess[str]) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_process_remote_code_folder_is_refused_and_runs_nothing(assets, tmp_path):
    from tests.fuzz.cases import _remote_code_folder

    _remote_code_folder(tmp_path, assets)
    result = _probes("info", str(tmp_path / "remote"), "--device", "cpu", cwd=tmp_path)
    _one_clean_line(result)
    assert "--trust-remote-code" in result.stderr
    assert not list(tmp_path.rglob("PWNED"))
    assert not list((tmp_path / "home").rglob("evil.py")) if (tmp_path / "home").exists() else True


def test_process_out_is_a_file_keeps_the_file(assets, tmp_path):
    taken = tmp_path / "taken.jsonl"
    taken.write_text("mine\n")
    before = snapshot(tmp_path)
    result = _probes(
        "datasets",
        "export",
        "age",
        "--out",
        str(tmp_path / "taken.jsonl" / "x.jsonl"),
        cwd=tmp_path,
    )
    _one_clean_line(result)
    assert str(taken) in result.stderr
    assert snapshot(tmp_path) == before


def test_process_bad_config_fails_before_the_model_loads(tmp_path):
    (tmp_path / "c.toml").write_bytes(b"[probes]\nC = nan\n")
    result = _probes(
        "run", "--model", "tiny-gemma3", "--config", "c.toml", "--out", "r", cwd=tmp_path
    )
    _one_clean_line(result)
    assert "probes.C" in result.stderr
    assert not (tmp_path / "r").exists()


def test_process_store_edited_by_hand_is_refused(assets, tmp_path):
    from tests.fuzz.assets import copy_store, edit_json

    store = copy_store(assets.store, tmp_path / "s")
    edit_json(store / "manifest.json", lambda m: m["request"]["model"].update(fingerprint="ab" * 8))
    result = _probes("probe", "--store", str(store), "--out", str(tmp_path / "o"), cwd=tmp_path)
    _one_clean_line(result)
    assert "digest" in result.stderr
    assert (
        json.loads((store / "manifest.json").read_text())["request"]["model"]["fingerprint"]
        == "ab" * 8
    )
