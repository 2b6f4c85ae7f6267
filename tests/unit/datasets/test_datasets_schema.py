"""Schema: Example and Dataset invariants, validation errors, hashing and twin pairs."""

from __future__ import annotations

import numpy as np
import pytest

from probes.datasets import Dataset, Example
from probes.errors import DatasetError, ProbesError


def ex(i: int, label: str, group: str = "g", pair: str | None = None, **kw) -> Example:
    return Example(
        id=f"e{i}",
        attribute="dialect",
        label=label,
        group=group,
        pair_id=pair,
        text=kw.pop("text", f"text {i}"),
        **kw,
    )


def small() -> Dataset:
    examples = [
        ex(0, "uk", pair="p0"),
        ex(1, "us", pair="p0"),
        ex(2, "us", "h", pair="p1"),
        ex(3, "uk", "h", pair="p1"),
        ex(4, "uk", "h"),
    ]
    return Dataset("toy", "dialect", ("uk", "us"), tuple(examples))


def assert_one_line_error(fn, *args, match: str) -> DatasetError:
    with pytest.raises(DatasetError, match=match) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    assert isinstance(info.value, ProbesError)
    return info.value


def test_accessors_and_label_ids() -> None:
    ds = small()
    assert len(ds) == 5 and ds[1].label == "us" and list(ds)[4].id == "e4"
    assert ds.texts[0] == "text 0"
    assert ds.label_ids.dtype == np.int64
    assert ds.label_ids.tolist() == [0, 1, 1, 0, 0]
    assert ds.groups == ["g", "g", "h", "h", "h"]
    assert ds.pair_ids == ["p0", "p0", "p1", "p1", None]
    assert ds.ids == ["e0", "e1", "e2", "e3", "e4"]


def test_pairs_are_ordered_by_label_order() -> None:
    assert small().pairs() == [(0, 1), (3, 2)]


def test_pairs_of_multi_class_sets_cover_every_label_pair() -> None:
    examples = [
        Example(f"x{k}", "age", lab, "g", text=f"t{k}", pair_id="s")
        for k, lab in enumerate(["c", "a", "b"])
    ]
    ds = Dataset("m", "age", ("a", "b", "c"), tuple(examples))
    assert ds.pairs() == [(1, 2), (1, 0), (2, 0)]


def test_subset_keeps_labels_and_order() -> None:
    sub = small().subset(np.array([4, 0]))
    assert sub.ids == ["e4", "e0"] and sub.labels == ("uk", "us")


def test_content_hash_ignores_name_but_not_meta() -> None:
    ds = small()
    renamed = Dataset("other", ds.attribute, ds.labels, ds.examples)
    assert renamed.content_hash() == ds.content_hash()
    changed = list(ds.examples)
    changed[0] = ex(0, "uk", pair="p0", meta={"x": 1})
    assert Dataset("toy", "dialect", ds.labels, tuple(changed)).content_hash() != ds.content_hash()
    reordered = Dataset("toy", "dialect", ("us", "uk"), ds.examples)
    assert reordered.content_hash() != ds.content_hash()


def test_user_text_of_chat_joins_user_turns() -> None:
    e = Example(
        "c",
        "a",
        "x",
        "g",
        messages=(("system", "be nice"), ("user", "hi"), ("assistant", "hello"), ("user", "bye")),
    )
    assert e.user_text == "hi\nbye"


def test_messages_lists_are_normalised_to_tuples() -> None:
    e = Example("c", "a", "x", "g", messages=[{"role": "user", "content": "hi"}])
    assert e.messages == (("user", "hi"),)
    hash(e)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of text and messages"),
        ({"text": "a", "messages": (("user", "b"),)}, "exactly one of text and messages"),
    ],
)
def test_example_needs_exactly_one_of_text_and_messages(kwargs, match) -> None:
    assert_one_line_error(lambda: Example("i", "a", "x", "g", **kwargs), match=match)


def test_bad_message_role() -> None:
    assert_one_line_error(
        lambda: Example("i", "a", "x", "g", messages=(("robot", "hi"),)), match="role"
    )


def test_validate_missing_field() -> None:
    ds = Dataset("t", "a", ("uk", "us"), (ex(0, "uk"), Example("", "a", "us", "g", text="t")))
    assert_one_line_error(ds.validate, match="missing the field 'id'")
    ds = Dataset("t", "a", ("uk", "us"), (ex(0, "uk"), ex(1, "us", group="")))
    assert_one_line_error(ds.validate, match="missing the field 'group'")


def test_validate_unknown_label() -> None:
    ds = Dataset("t", "dialect", ("uk", "us"), (ex(0, "uk"), ex(1, "au")))
    assert_one_line_error(ds.validate, match="unknown label 'au'")


def test_validate_single_class() -> None:
    ds = Dataset("t", "dialect", ("uk", "us"), (ex(0, "uk"), ex(1, "uk")))
    assert_one_line_error(ds.validate, match="single class")


def test_validate_duplicate_ids() -> None:
    ds = Dataset("t", "dialect", ("uk", "us"), (ex(0, "uk"), ex(0, "us")))
    assert_one_line_error(ds.validate, match="duplicate example id 'e0'")


def test_validate_empty_set() -> None:
    assert_one_line_error(Dataset("t", "dialect", ("uk", "us"), ()).validate, match="empty")


def test_validate_empty_text_and_declared_labels() -> None:
    ds = Dataset("t", "dialect", ("uk", "us"), (ex(0, "uk", text="  "), ex(1, "us")))
    assert_one_line_error(ds.validate, match="empty text")
    ds = Dataset("t", "dialect", ("uk",), (ex(0, "uk"), ex(1, "uk")))
    assert_one_line_error(ds.validate, match="single class")


def test_validate_catches_both_text_and_messages_set_after_construction() -> None:
    e = ex(1, "us")
    object.__setattr__(e, "messages", (("user", "x"),))
    ds = Dataset("t", "dialect", ("uk", "us"), (ex(0, "uk"), e))
    assert_one_line_error(ds.validate, match="exactly one of text and messages")


def test_label_ids_with_unknown_label_raises() -> None:
    ds = Dataset("t", "dialect", ("uk", "us"), (ex(0, "uk"), ex(1, "au")))
    assert_one_line_error(lambda: ds.label_ids, match="'au'")
