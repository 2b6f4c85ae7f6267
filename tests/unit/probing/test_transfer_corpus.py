"""Hand-written transfer corpus: loads, balanced, disjoint from the built-ins, cues implicit."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

import probes.datasets
from probes.datasets import load_dataset
from probes.datasets.io import HEADER_KEY
from probes.pipeline.config import PROBE_ATTRIBUTES

TRANSFER_DIR = Path(probes.datasets.__file__).parent / "data" / "transfer"
NAMES = list(PROBE_ATTRIBUTES)  # one transfer corpus per probed attribute
MIN_ROWS = 40
MAX_IMBALANCE = 1.25

# The user must never state the attribute outright; these catch the obvious phrasings.
_I = r"\bI(?:\s+am|'m|’m|m)\s+"
EXPLICIT = [
    re.compile(_I + r"(?:an?\s+)?(?:woman|man|girl|boy|guy|lady|female|male)\b", re.I),
    re.compile(_I + r"(?:an?\s+)?(?:british|american|english|brit|yank)\b", re.I),
    re.compile(_I + r"(?:an?\s+)?(?:child|kid|teen|teenager|senior|retiree)\b", re.I),
    re.compile(_I + r"(?:about\s+)?\d+\s*(?:years?|yrs?)(?:\s+old)?\b", re.I),
    re.compile(r"\bmy age is\b|\bI(?:'m| am) aged\b", re.I),
    re.compile(_I + r"(?:poor|rich|wealthy|low[- ]income|middle[- ]class|upper[- ]class)\b", re.I),
    re.compile(r"\bI (?:didn'?t|never|did not) (?:finish|graduate|complete)\w*", re.I),
    re.compile(r"\bI have an? (?:phd|doctorate|degree|master'?s|diploma)\b", re.I),
    re.compile(r"\b(?:my english is|english is not my|non[- ]native|native speaker)\b", re.I),
    re.compile(r"\bmy (?:first|native|mother) (?:language|tongue)\b", re.I),
]


def _path(name: str) -> Path:
    return TRANSFER_DIR / f"{name}.jsonl"


@pytest.fixture(scope="module")
def builtins() -> dict:
    return {name: load_dataset(name) for name in NAMES}


@pytest.fixture(scope="module")
def corpus() -> dict:
    return {name: load_dataset(_path(name)) for name in NAMES}


def test_every_attribute_has_a_file() -> None:
    assert sorted(p.stem for p in TRANSFER_DIR.glob("*.jsonl")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_header_line_matches_the_builtin(name: str, builtins: dict) -> None:
    first = _path(name).read_text(encoding="utf-8").splitlines()[0]
    header = json.loads(first)[HEADER_KEY]
    assert header["attribute"] == builtins[name].attribute
    assert tuple(header["labels"]) == builtins[name].labels


@pytest.mark.parametrize("name", NAMES)
def test_loads_with_builtin_labels_and_attribute(name: str, corpus: dict, builtins: dict) -> None:
    ds = corpus[name]
    assert len(ds) >= MIN_ROWS
    assert ds.labels == builtins[name].labels
    assert ds.attribute == builtins[name].attribute
    assert all(ex.text and ex.messages is None for ex in ds.examples)


@pytest.mark.parametrize("name", NAMES)
def test_classes_are_balanced_and_topics_varied(name: str, corpus: dict) -> None:
    ds = corpus[name]
    counts = Counter(ex.label for ex in ds.examples)
    assert set(counts) == set(ds.labels)
    assert max(counts.values()) / min(counts.values()) <= MAX_IMBALANCE
    groups = {ex.group for ex in ds.examples}
    assert len(groups) >= 5 and "default" not in groups
    for group in groups:
        labels = {ex.label for ex in ds.examples if ex.group == group}
        assert labels == set(ds.labels), f"topic {group} lacks some labels"


@pytest.mark.parametrize("name", NAMES)
def test_messages_are_chatty_and_unique(name: str, corpus: dict) -> None:
    texts = [ex.text for ex in corpus[name].examples]
    assert len(set(texts)) == len(texts)
    for text in texts:
        sentences = [s for s in re.split(r"[.?!]+(?:\s+|$)", text) if s.strip()]
        assert 2 <= len(sentences) <= 7, text
        assert 100 <= len(text) <= 500, text


@pytest.mark.parametrize("name", NAMES)
def test_no_builtin_text_is_reused(name: str, corpus: dict, builtins: dict) -> None:
    seen = {" ".join(ex.text.lower().split()) for ex in builtins[name].examples if ex.text}
    for ex in corpus[name].examples:
        text = " ".join(ex.text.lower().split())
        assert text not in seen, ex.id
        hits = [b for b in seen if b in text]
        assert not hits, f"{ex.id} contains built-in text {hits[0]!r}"


@pytest.mark.parametrize("name", NAMES)
def test_attribute_is_never_stated_outright(name: str, corpus: dict) -> None:
    for ex in corpus[name].examples:
        for pattern in EXPLICIT:
            match = pattern.search(ex.text)
            assert match is None, f"{ex.id}: explicit cue {match.group(0)!r}"


def test_explicit_patterns_catch_explicit_statements() -> None:
    bad = [
        "I am a woman and I need help.",
        "I'm British, so tea is a must.",
        "I'm 70 years old now.",
        "Im 14 yrs old lol",
        "English is not my first language, sorry.",
        "I didn't finish high school.",
        "I'm low-income and need advice.",
    ]
    for text in bad:
        assert any(p.search(text) for p in EXPLICIT), text
