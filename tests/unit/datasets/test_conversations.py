"""Conversation sets: multi-turn chats, cues across topics and registers, twins, never stated."""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from pathlib import Path

import pytest

from probes.datasets import list_datasets, load_dataset
from probes.datasets.conversations import (
    MAX_TURNS,
    MIN_TURNS,
    TOPICS,
    conversation_family_count,
    conversation_names,
)
from probes.errors import DatasetError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "probing"))
from test_transfer_corpus import EXPLICIT  # one list of giveaway phrasings

NAMES = conversation_names()
BIG = 480  # enough twin sets to see every family, register and topic


@pytest.fixture(scope="module")
def sets() -> dict:
    return {name: load_dataset(name, size=BIG) for name in NAMES}


def test_every_attribute_has_a_conversation_set_in_the_catalogue() -> None:
    infos = {i.name: i for i in list_datasets()}
    for base in ("age", "gender", "education", "socioeconomic", "dialect_us_uk", "proficiency"):
        conv = infos[f"{base}_conv"]
        assert (conv.attribute, conv.labels) == (infos[base].attribute, infos[base].labels)
        assert conv.has_pairs and conv.description


@pytest.mark.parametrize("name", NAMES)
def test_chats_alternate_and_have_three_to_six_user_turns(sets, name: str) -> None:
    ds = sets[name]
    ds.validate()
    counts = Counter()
    for ex in ds:
        roles = [r for r, _ in ex.messages]
        assert roles[0] == roles[-1] == "user"
        assert all(a != b for a, b in itertools.pairwise(roles)), "turns alternate"
        n_user = roles.count("user")
        assert MIN_TURNS <= n_user <= MAX_TURNS
        counts[n_user] += 1
    assert set(counts) == set(range(MIN_TURNS, MAX_TURNS + 1)), "every length occurs"


@pytest.mark.parametrize("name", NAMES)
def test_families_registers_and_topics_all_occur(sets, name: str) -> None:
    ds = sets[name]
    assert len(set(ds.groups)) == conversation_family_count() >= 10
    assert {ex.meta["register"] for ex in ds} == {"terse", "chatty", "typos", "emoji", "formal"}
    assert {t for ex in ds for t in ex.meta["topics"]} == set(TOPICS)
    per_family = Counter((ex.group, ex.label) for ex in ds)
    for group in set(ds.groups):
        assert len({per_family[(group, label)] for label in ds.labels}) == 1, "balanced"


@pytest.mark.parametrize("name", NAMES)
def test_twins_share_everything_but_their_cue_lines(sets, name: str) -> None:
    ds = sets[name]
    twins: dict[str, list] = {}
    for ex in ds:
        twins.setdefault(ex.pair_id, []).append(ex)
    assert all(len(members) == len(ds.labels) for members in twins.values())
    differing = 0
    for members in twins.values():
        first = members[0]
        for other in members[1:]:
            assert len(other.messages) == len(first.messages)
            assert [c for r, c in other.messages if r == "assistant"] == [
                c for r, c in first.messages if r == "assistant"
            ], "assistant turns are identical across twins"
            assert other.meta["topics"] == first.meta["topics"]
            assert other.meta["register"] == first.meta["register"]
            differing += sum(a != b for a, b in zip(first.messages, other.messages, strict=True))
    assert differing >= 2 * len(twins), "cues differ in at least two turns per twin"


@pytest.mark.parametrize("name", NAMES)
def test_the_attribute_is_never_stated(sets, name: str) -> None:
    ds = sets[name]
    label_words = [label.replace("_", " ") for label in ds.labels if len(label) >= 6]
    for ex in ds:
        for role, content in ex.messages:
            if role != "user":
                continue
            for pattern in EXPLICIT:
                assert not pattern.search(content), (ex.id, content)
            lowered = content.lower()
            assert not any(f" {word} " in f" {lowered} " for word in label_words), content


def test_cues_accumulate_over_turns(sets) -> None:
    ds = sets["age_conv"]
    assert all(len(ex.meta["cues"]) >= 2 for ex in ds)
    assert sum(len(ex.meta["cues"]) >= 4 for ex in ds) > len(ds) / 3


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_nested_and_seeded(name: str) -> None:
    a, b = load_dataset(name), load_dataset(name)
    assert a.content_hash() == b.content_hash()
    assert load_dataset(name, seed=1).content_hash() != a.content_hash()
    small = load_dataset(name, size=len(a.labels) * 6)
    big = {ex.id: ex for ex in a}
    assert all(big[ex.id] == ex for ex in small)


def test_raw_frame_keeps_the_user_turns_only() -> None:
    from probes.datasets import RenderSpec, render

    ex = load_dataset("gender_conv", size=2)[0]
    raw = render([ex], RenderSpec(frame="raw"))[0]
    chat = render([ex], RenderSpec(frame="chat"))[0]
    assert raw == "\n".join(c for r, c in ex.messages if r == "user")
    assert chat.count("Assistant:") == len(ex.messages) // 2 + 1 and chat.endswith("Assistant:")


def test_too_small_a_size_is_one_line() -> None:
    with pytest.raises(DatasetError, match="needs size >= 4"):
        load_dataset("age_conv", size=3)
