"""Built-in datasets: determinism, size, balance, families, twins that differ only in their cues."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np
import pytest

from probes.datasets import PERSONAS, family_count, list_datasets, load_dataset
from probes.datasets.builtin import builtin_names
from probes.errors import DatasetError

NAMES = builtin_names()  # the templated sets (conversation sets: test_conversations.py)
EXPECTED = {
    "dialect_us_uk": ("dialect", ("uk", "us")),
    "age": ("age", ("child", "adolescent", "adult", "older_adult")),
    "gender": ("gender", ("female", "male")),
    "education": ("education", ("some_schooling", "high_school", "college_and_more")),
    "socioeconomic": ("socioeconomic", ("low", "middle", "high")),
    "proficiency": ("proficiency", ("native", "non_native")),
    "belief": ("belief", ("true", "false")),
}


@pytest.fixture(scope="module")
def builtins() -> dict:
    return {name: load_dataset(name) for name in NAMES}


def test_catalogue() -> None:
    assert set(EXPECTED) | {"personas"} == set(NAMES)
    infos = {info.name: info for info in list_datasets()}
    for name, (attribute, labels) in EXPECTED.items():
        assert (infos[name].attribute, infos[name].labels) == (attribute, labels)
        assert infos[name].description and infos[name].has_pairs
    assert infos["personas"].attribute == "persona" and infos["personas"].labels[-1] == "none"


@pytest.mark.parametrize("name", NAMES)
def test_default_size_families_and_validity(builtins, name: str) -> None:
    ds = builtins[name]
    ds.validate()
    info = next(i for i in list_datasets() if i.name == name)
    assert len(ds) >= 500 and len(ds) <= info.default_size
    assert len(set(ds.groups)) >= 10 and len(set(ds.groups)) == family_count(name)
    assert len(set(ds.texts)) == len(ds), "no duplicate texts at default size"


@pytest.mark.parametrize("name", NAMES)
def test_determinism_by_seed(builtins, name: str) -> None:
    again = load_dataset(name)
    assert again.content_hash() == builtins[name].content_hash()
    assert load_dataset(name, seed=1).content_hash() != builtins[name].content_hash()


@pytest.mark.parametrize("name", NAMES)
def test_smaller_sizes_are_nested_and_balanced(builtins, name: str) -> None:
    ds = builtins[name]
    k = len(ds.labels)
    small = load_dataset(name, size=5 * k + 1)
    assert len(small) == 5 * k
    big = {e.id: e for e in ds}
    assert all(big[e.id] == e and big[e.id].meta == e.meta for e in small)
    assert set(Counter(small.label_ids.tolist()).values()) == {5}


def test_size_below_one_set_is_refused() -> None:
    with pytest.raises(DatasetError, match="needs size >= 4"):
        load_dataset("age", size=3)


def test_builtin_attribute_mismatch_is_refused() -> None:
    with pytest.raises(DatasetError, match="has attribute 'dialect'"):
        load_dataset("dialect_us_uk", attribute="age")


@pytest.mark.parametrize("name", NAMES)
def test_balance_within_every_family(builtins, name: str) -> None:
    ds = builtins[name]
    per_family: dict[str, Counter] = defaultdict(Counter)
    for e in ds:
        per_family[e.group][e.label] += 1
    for group, counts in per_family.items():
        assert set(counts) == set(ds.labels), group
        assert len(set(counts.values())) == 1, (group, counts)


@pytest.mark.parametrize("name", NAMES)
def test_word_counts_balanced_within_family(builtins, name: str) -> None:
    ds = builtins[name]
    lengths: dict[tuple[str, str], list[int]] = defaultdict(list)
    for e in ds:
        if e.label != "none":  # the persona baseline has no "I am ..." sentence by design
            lengths[(e.group, e.label)].append(len(e.text.split()))
    for group in set(ds.groups):
        means = [np.mean(lengths[(group, lab)]) for lab in ds.labels if lab != "none"]
        assert max(means) / min(means) <= 1.25, (group, means)


@pytest.mark.parametrize("name", NAMES)
def test_twin_sets_share_everything_but_the_cue(builtins, name: str) -> None:
    ds = builtins[name]
    sets: dict[str, list[int]] = defaultdict(list)
    for i, pid in enumerate(ds.pair_ids):
        assert pid is not None
        sets[pid].append(i)
    assert all(len(v) == len(ds.labels) for v in sets.values())
    assert len(ds.pairs()) == len(sets) * len(ds.labels) * (len(ds.labels) - 1) // 2
    for i, j in ds.pairs():
        a, b = ds[i], ds[j]
        assert a.group == b.group and a.label != b.label and a.text != b.text
        assert a.meta["template"] == b.meta["template"]
        cues = set(a.meta["cues"]) | set(b.meta["cues"])
        assert _skeleton(a.text, cues) == _skeleton(b.text, cues), (a.text, b.text)


def _skeleton(text: str, cues: set[str]) -> str:
    """The text with every cue string removed (case-insensitive, whole words), spaces tidied."""
    for cue in sorted(cues, key=len, reverse=True):
        pattern = re.escape(cue)
        if cue[:1].isalnum():
            pattern = r"(?<!\w)" + pattern
        if cue[-1:].isalnum():
            pattern += r"(?!\w)"
        text = re.sub(pattern, " ", text, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", text).strip()


def test_dialect_twins_differ_only_in_lexicon_words(builtins) -> None:
    ds = builtins["dialect_us_uk"]
    for uk, us in ds.pairs():
        assert (ds[uk].label, ds[us].label) == ("uk", "us")
        for e, other in ((ds[uk], ds[us]), (ds[us], ds[uk])):
            changed = Counter(e.text.lower().split()) - Counter(other.text.lower().split())
            cues = [c.lower() for c in e.meta["cues"]]
            assert changed and all(
                any(c in w or w.strip(".,?!") in c for c in cues) for w in changed
            ), (e.text, cues)


def test_belief_meta_holds_answers(builtins) -> None:
    ds = builtins["belief"]
    for i, j in ds.pairs():
        t, f = ds[i], ds[j]
        assert (t.label, f.label) == ("true", "false")
        assert t.meta["question"] == f.meta["question"] and t.meta["question"] in t.text
        assert t.meta["correct_answer"] in t.text and t.meta["false_answer"] in f.text
        assert t.meta["correct_answer"] != t.meta["false_answer"]


def test_personas(builtins) -> None:
    assert len(PERSONAS) == 31
    groups = Counter(p.group for p in PERSONAS.values())
    assert set(groups) == {
        "disability",
        "religion",
        "race",
        "gender",
        "political_affiliation",
        "age",
        "sexuality",
    }
    ds = builtins["personas"]
    assert ds.labels == (*PERSONAS, "none")
    for e in ds:
        if e.label == "none":
            assert e.meta["persona_group"] == "none" and not e.text.startswith("I am ")
        else:
            group, text = PERSONAS[e.label]
            assert e.meta["persona_group"] == group
            assert e.text.startswith(f"I am {text}. ")
