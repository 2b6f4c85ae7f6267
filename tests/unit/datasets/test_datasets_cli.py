"""`probes datasets` handlers, driven through argparse without a subprocess."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from probes.cli.datasets import register
from probes.datasets import load_dataset
from probes.errors import DatasetError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="probes")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def run(*argv: str) -> int:
    args = parse(*argv)
    return args.func(args)


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("datasets", "list") == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["name", "attribute", "labels", "size", "families", "pairs"]
    assert "dialect_us_uk" in out and "personas" in out
    row = next(line for line in out.splitlines() if line.startswith("dialect_us_uk"))
    assert row.split()[1:] == ["dialect", "uk,us", "600", "13", "300"]


def test_show_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("datasets", "show", "age", "--n", "3", "--size", "40", "--seed", "2") == 0
    out = capsys.readouterr().out
    assert "examples:   40" in out and "child (10)" in out
    assert load_dataset("age", size=40, seed=2).content_hash() in out
    assert len([line for line in out.splitlines() if line.startswith("age:")]) == 3


def test_export_then_show_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "b.csv"
    assert run("datasets", "export", "belief", "--out", str(out_path), "--size", "20") == 0
    assert "wrote 20 examples" in capsys.readouterr().out
    assert load_dataset(out_path).content_hash() == load_dataset("belief", size=20).content_hash()
    assert run("datasets", "show", str(out_path), "--n", "1") == 0
    assert "labels:     true (10), false (10)" in capsys.readouterr().out


def test_show_chat_file_with_column_mapping(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": "line one"}, '
        '{"role": "user", "content": "two"}], "y": "a"}\n{"say": "hey", "y": "b"}\n',
        encoding="utf-8",
    )
    assert run("datasets", "show", str(path), "--label-col", "y", "--text-col", "say") == 0
    out = capsys.readouterr().out
    assert "line one \u23ce two" in out and "a (1), b (1)" in out


def test_errors_propagate_as_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Unknown dataset"):
        run("datasets", "show", "nope")
    with pytest.raises(DatasetError, match=r"\.jsonl or \.csv"):
        run("datasets", "export", "gender", "--out", str(tmp_path / "x.parquet"))


def test_subcommand_is_required() -> None:
    with pytest.raises(SystemExit):
        parse("datasets")
    with pytest.raises(SystemExit):
        parse("datasets", "show", "age", "--size", "0")
