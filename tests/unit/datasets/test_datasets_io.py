"""Import and export: JSONL / CSV round trips, chat rows, column mapping, line-numbered errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from probes.datasets import Dataset, Example, export_dataset, load_dataset
from probes.errors import DatasetError


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_line(err: pytest.ExceptionInfo[DatasetError]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["dialect_us_uk", "age", "personas"])
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_builtin_round_trip(tmp_path: Path, name: str, suffix: str) -> None:
    ds = load_dataset(name, size=96, seed=3)
    path = export_dataset(ds, tmp_path / f"out{suffix}")
    back = load_dataset(path)
    assert back.content_hash() == ds.content_hash()
    assert back.labels == ds.labels and back.name == ds.name and back.examples == ds.examples
    assert [e.meta for e in back] == [e.meta for e in ds]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_round_trip_of_chat_and_awkward_text(tmp_path: Path, suffix: str) -> None:
    examples = (
        Example("a", "tone", "formal", "g1", text='He said "hi",\nthen left; 50% £ — ok'),
        Example(
            "b",
            "tone",
            "casual",
            "g1",
            messages=(("system", "sys"), ("user", "hey, there"), ("assistant", "yo")),
        ),
        Example("c", "tone", "formal", "g2", text="  padded  ", pair_id="p", meta={"k": [1, 2.5]}),
    )
    ds = Dataset("weird", "tone", ("formal", "casual"), examples)
    back = load_dataset(export_dataset(ds, tmp_path / f"w{suffix}"))
    assert back.content_hash() == ds.content_hash()


def test_export_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    ds = load_dataset("gender", size=20)
    target = tmp_path / "sub" / "g.jsonl"
    export_dataset(ds, target)
    export_dataset(ds, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["g.jsonl"]


def test_export_refuses_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"\.jsonl or \.csv") as err:
        export_dataset(load_dataset("gender", size=20), tmp_path / "g.txt")
    one_line(err)


def test_plain_jsonl_defaults(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "tone.jsonl",
        [
            {"text": "Good evening.", "label": "formal"},
            {"text": "hey", "label": "casual", "source": "forum"},
            {"text": "Dear Sir", "label": "formal"},
        ],
    )
    ds = load_dataset(path)
    assert ds.labels == ("casual", "formal")
    assert ds.ids == ["0", "1", "2"] and ds.groups == ["default"] * 3
    assert ds.pair_ids == [None, None, None]
    assert ds.attribute == "tone" and ds.name == "tone"
    assert ds[1].meta == {"source": "forum"}


def test_chat_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "I reckon it'll rain"},
                    {"role": "assistant", "content": "Maybe."},
                    {"role": "user", "content": "Fancy a cuppa?"},
                ],
                "label": "uk",
            },
            {"messages": [{"role": "user", "content": "Y'all want soda?"}], "label": "us"},
        ],
    )
    ds = load_dataset(path, attribute="dialect")
    assert ds[0].messages is not None and ds[0].text is None
    assert ds.texts[0] == "I reckon it'll rain\nFancy a cuppa?"
    assert ds.attribute == "dialect" and {e.attribute for e in ds} == {"dialect"}


def test_column_mapping_csv(tmp_path: Path) -> None:
    path = tmp_path / "mapped.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "prompt", "y", "family", "twin", "note"])
        writer.writerow(["a1", "colour", "uk", "f1", "t1", "x"])
        writer.writerow(["a2", "color", "us", "f1", "t1", ""])
        writer.writerow(["a3", "flat", "uk", "f2", "", ""])
    ds = load_dataset(
        path,
        text_col="prompt",
        label_col="y",
        group_col="family",
        id_col="uid",
        pair_col="twin",
        attribute="dialect",
    )
    assert ds.ids == ["a1", "a2", "a3"] and ds.texts == ["colour", "color", "flat"]
    assert ds.groups == ["f1", "f1", "f2"] and ds.pair_ids == ["t1", "t1", None]
    assert ds.pairs() == [(0, 1)] and ds[0].meta == {"note": "x"} and ds[1].meta == {}


def test_size_samples_whole_twin_groups(tmp_path: Path) -> None:
    ds = load_dataset("dialect_us_uk", size=100)
    path = export_dataset(ds, tmp_path / "d.jsonl")
    sub = load_dataset(path, size=30, seed=1)
    assert len(sub) == 30
    assert all(sub.pair_ids.count(p) == 2 for p in sub.pair_ids)
    assert load_dataset(path, size=30, seed=1).content_hash() == sub.content_hash()
    assert load_dataset(path, size=30, seed=2).content_hash() != sub.content_hash()


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="No dataset file") as err:
        load_dataset(tmp_path / "nope.jsonl")
    one_line(err)
    with pytest.raises(DatasetError, match="Unknown dataset 'dialect_xx'") as err:
        load_dataset("dialect_xx")
    assert "dialect_us_uk" in one_line(err)


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (['{"text": "a", "label": "x"}', "{not json"], "line 2 is not valid JSON"),
        (['{"text": "a", "label": "x"}', "[1, 2]"], "line 2 is not a JSON object"),
        (['{"text": "a", "label": "x"}', '{"text": "b"}'], "line 2 is missing the label"),
        (['{"text": "a", "label": "x"}', "", '{"label": "y"}'], "line 3 has neither"),
        (
            ['{"text": "a", "label": "x", "messages": [{"role": "user", "content": "b"}]}'],
            "line 1 has both",
        ),
        (['{"label": "x", "messages": [{"role": "bot", "content": "b"}]}'], "line 1: message"),
        (
            ['{"text": "a", "label": "x", "id": "1"}', '{"text": "b", "label": "y", "id": "1"}'],
            "duplicate example id '1'",
        ),
        (['{"text": "a", "label": "x"}', '{"text": "b", "label": "x"}'], "single class"),
        (['{"text": "a", "label": ["x"]}'], "line 1: the label must be a string"),
        ([], "has no rows"),
    ],
)
def test_bad_jsonl_rows(tmp_path: Path, rows: list[str], match: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset(path)
    one_line(err)


def test_bad_csv_row_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('text,label\n"multi\nline",x\nok,\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.csv, line 4 is missing the label") as err:
        load_dataset(path)
    one_line(err)
    path.write_text("text,label\na,x,extra\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="line 2 has more cells"):
        load_dataset(path)


def test_unsupported_extension_and_bad_size(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"\.jsonl or \.csv"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="positive integer"):
        load_dataset("gender", size=0)
