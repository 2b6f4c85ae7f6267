"""Label maps, spelling normalisation and unions of datasets of one attribute."""

from __future__ import annotations

import pytest

from probes.datasets import load_dataset
from probes.datasets.labels import (
    align_labels,
    map_label,
    normalize_label,
    parse_label_map,
    union_datasets,
)
from probes.datasets.schema import Dataset, Example
from probes.errors import DatasetError


def _file_like(labels: list[str]) -> Dataset:
    examples = [
        Example(id=f"r{i}", attribute="age", label=label, group=f"g{i % 3}", text=f"text {i}")
        for i, label in enumerate(labels)
    ]
    return Dataset("imported", "age", tuple(dict.fromkeys(labels)), tuple(examples))


def test_spellings_normalise_to_one_label() -> None:
    for spelling in ("older adult", "Older-Adult", " older_adult ", "OLDER  ADULT"):
        assert normalize_label(spelling) == "older_adult"


def test_label_map_parses_and_refuses_bad_items() -> None:
    assert parse_label_map(["Teen=adolescent", "senior = older adult"]) == {
        "teen": "adolescent",
        "senior": "older_adult",
    }
    for bad in ("teen", "=adolescent", "teen="):
        with pytest.raises(DatasetError, match="old=new"):
            parse_label_map([bad])


def test_align_maps_spellings_and_follows_the_target_order() -> None:
    ds = _file_like(["Older Adult", "teen", "child", "adult", "teen", "older adult"])
    target = ("child", "adolescent", "adult", "older_adult")
    aligned = align_labels(ds, target, parse_label_map(["teen=adolescent"]))
    assert aligned.labels == target
    assert [ex.label for ex in aligned] == [
        "older_adult",
        "adolescent",
        "child",
        "adult",
        "adolescent",
        "older_adult",
    ]
    assert map_label("Teen", {"teen": "adolescent"}) == "adolescent"


def test_an_unknown_label_names_the_map_to_add() -> None:
    ds = _file_like(["child", "toddler"])
    with pytest.raises(DatasetError, match="--label-map toddler="):
        align_labels(ds, ("child", "adult"))


def test_union_keeps_sources_apart() -> None:
    templated = load_dataset("age", size=8)
    chats = load_dataset("age_conv", size=8)
    union = union_datasets([templated, chats], name="age_union")
    assert len(union) == 16 and union.labels == templated.labels
    assert {ex.meta["source"] for ex in union} == {"age", "age_conv"}
    assert all(ex.group.split("/")[0] == ex.meta["source"] for ex in union)
    assert len(set(union.ids)) == 16
    assert len(set(union.groups)) == len(set(templated.groups)) + len(set(chats.groups))
    assert [ex.messages is not None for ex in union].count(True) == 8
