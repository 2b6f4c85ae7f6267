"""`probes probe --select-on ... --test ...`: settings chosen on other styles, one test score."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from probes.cli.app import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "probing"))
from test_selection import style_store  # one generator of style-shifted synthetic stores


def test_select_on_other_styles_then_score_the_test(tmp_path, capsys) -> None:
    train = style_store(tmp_path / "train", 0, 96, 2, seed=0)
    other = style_store(tmp_path / "other", 1, 96, 2, seed=1)
    test = style_store(tmp_path / "test", 2, 48, 2, seed=2)
    out = tmp_path / "out"
    args = ["probe", "--store", str(train.path), "--select-on", str(other.path)]
    assert main([*args, "--test", str(test.path), "--Cs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "at layer 2, C=1" in printed and "the test set was not used" in printed
    payload = json.loads((out / "results.json").read_text())
    assert payload["selection"]["chosen"]["layer"] == 2
    assert payload["test"]["layer"] == 2 and payload["test"]["accuracy"] > 0.9


def test_test_without_select_on_is_a_one_line_error(tmp_path, capsys) -> None:
    train = style_store(tmp_path / "train", 0, 48, 2, seed=0)
    code = main(["probe", "--store", str(train.path), "--test", str(train.path), "--out", "x"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "--test needs --select-on" in err and "\n" not in err
