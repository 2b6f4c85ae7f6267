"""Behaviour items: counts, twins, answer sets and rendering with an answer prefix."""

from __future__ import annotations

from collections import Counter

import pytest

from probes.datasets import BehaviorItem, RenderSpec, load_behavior_items, render_behavior
from probes.datasets.behavior import behavior_attributes
from probes.errors import DatasetError

CUES = {
    "dialect": ("uk", "us"),
    "belief": ("true", "false"),
    "proficiency": ("native", "non_native"),
}
ROLES = {
    "dialect": ("uk", "us"),
    "belief": ("correct", "user_false"),
    "proficiency": ("correct", "incorrect"),
}


@pytest.mark.parametrize("attribute", ["dialect", "belief", "proficiency"])
def test_counts_twins_and_answer_sets(attribute: str) -> None:
    items = load_behavior_items(attribute)
    assert len(items) >= 40
    assert len({it.id for it in items}) == len(items)
    assert {it.attribute for it in items} == {attribute}
    assert {it.cue for it in items} == set(CUES[attribute])
    assert Counter(it.cue for it in items)[CUES[attribute][0]] == len(items) // 2
    twins: dict[str, list[BehaviorItem]] = {}
    for it in items:
        twins.setdefault(it.pair_id, []).append(it)
        assert (it.positive, it.negative) == ROLES[attribute]
        assert all(a and not a.endswith(" ") for v in it.answers.values() for a in v)
        assert not set(it.answers[it.positive]) & set(it.answers[it.negative])
        assert it.answer_prefix == it.answer_prefix.strip()
    for pair in twins.values():
        a, b = pair
        assert a.cue != b.cue and a.text != b.text
        assert (a.answer_prefix, a.answers, a.group) == (b.answer_prefix, b.answers, b.group)


def test_belief_texts_state_the_answer_of_their_cue() -> None:
    for it in load_behavior_items("belief"):
        role = "correct" if it.cue == "true" else "user_false"
        assert it.answers[role][0].strip() in it.text


def test_render_behavior_appends_the_prefix() -> None:
    items = load_behavior_items("dialect")[:2]
    raw = render_behavior(items)
    assert raw[0] == f"{items[0].text} {items[0].answer_prefix}"
    chat = render_behavior(items, RenderSpec("chat"))
    assert chat[1] == f"User: {items[1].text}\nAssistant: {items[1].answer_prefix}"
    empty = BehaviorItem("x", "dialect", "Hi.", "uk", "", {"a": (" a",), "b": (" b",)}, "a", "b")
    assert render_behavior([empty]) == ["Hi."]


def test_items_allow_multi_token_answers_and_normalise_sets() -> None:
    it = BehaviorItem(
        "x", "a", "t", "c", "p", {"good": [" New York"], "bad": " Paris"}, "good", "bad"
    )
    assert it.answers == {"good": (" New York",), "bad": (" Paris",)}
    hash(it)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"positive": "nope"}, "positive set 'nope'"),
        ({"negative": "good"}, "must differ"),
        ({"answers": {"good": (), "bad": (" b",)}}, "non-empty strings"),
        ({"text": ""}, "missing the field 'text'"),
    ],
)
def test_item_validation(kwargs: dict, match: str) -> None:
    base = dict(
        id="x",
        attribute="a",
        text="t",
        cue="c",
        answer_prefix="p",
        answers={"good": (" g",), "bad": (" b",)},
        positive="good",
        negative="bad",
    )
    with pytest.raises(DatasetError, match=match) as err:
        BehaviorItem(**{**base, **kwargs})
    assert "\n" not in str(err.value)


def test_unknown_attribute() -> None:
    assert set(behavior_attributes()) >= {"dialect", "belief", "proficiency"}
    with pytest.raises(DatasetError, match="No behaviour items for attribute 'age'"):
        load_behavior_items("age")
