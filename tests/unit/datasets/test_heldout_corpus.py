"""The hand-written held-out conversation corpus: format, balance, turn structure, no giveaways."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest

from probes.datasets import Dataset, Example, heldout_corpus, list_datasets, load_dataset
from probes.errors import DatasetError

HELDOUT = Path(str(files("probes.datasets").joinpath("data", "heldout")))
MIN_CONVERSATIONS = {
    "age": 48,
    "gender": 48,
    "socioeconomic": 48,
    "education": 48,
    "dialect_us_uk": 40,
    "proficiency": 40,
}
NAMES = sorted(MIN_CONVERSATIONS)
MAX_ASSISTANT_WORDS = 60
MAX_TURN_GAP = 0.5  # mean user turns, most minus fewest, across labels
MAX_WORD_RATIO = 1.25  # mean user words, longest label over shortest

# Direct statements of the label, by the user or by the assistant. Cues (a husband, a pension,
# a landlord, a thesis, "my 4 year old", "colour") are the point of the corpus and stay allowed;
# what is refused is saying it outright: "I'm 72", "as a woman", "I'm poor", "my degree",
# "I'm British", "my English". Matched case-insensitively on every turn.
_ROLE = r"(?:as|i'?m|i am|we'?re|we are)"
GIVEAWAYS: dict[str, list[str]] = {
    "age": [
        r"\b(?:i'?m|i am|i'?ll be|i turn(?:ed|s)?|turning) (?:only |almost |nearly )?\d{1,3}\b",
        r"\b(?:i'?m|i am) (?:only |almost |nearly )?[a-z-]+ years? old\b",
        r"\bmy \d+(?:st|nd|rd|th) birthday\b",
        rf"\b{_ROLE} (?:a |an )?(?:kid|child|teen|teenager|grown-?up|adult|senior|retiree|"
        r"pensioner|old (?:man|woman|lady|person)|older (?:man|woman|person|adult))\b",
        r"\b(?:i'?m|i am|since i|now that i'?m|i) retired\b",
        r"\b(?:senior citizen|elderly|old folks?|my age|at my age|middle[- ]aged)\b",
        r"\bi'?m in (?:the )?\d+(?:st|nd|rd|th) grade\b",
        r"\b(?:i'?m|i am) (?:a )?(?:freshman|sophomore|junior|senior)\b",
    ],
    "gender": [
        rf"\b{_ROLE} (?:a |an )?(?:woman|man|girl|guy|boy|lady|gal|female|male|mom|mum|dad|"
        r"mother|father|wife|husband|son|daughter|trans (?:woman|man))\b",
        r"\bmy gender\b",
    ],
    "socioeconomic": [
        rf"\b{_ROLE} (?:so |really |very |pretty )?(?:poor|broke|rich|wealthy|well[- ]off|"
        r"comfortable|middle[- ]class|working[- ]class)\b",
        r"\b(?:low|lower|middle|high|higher)[- ]income\b",
        r"\b(?:working|middle|upper|lower)[- ]class\b",
        r"\b(?:poverty|wealthy|millionaire|affluent|well-to-do|poor people|rich people)\b",
    ],
    "education": [
        r"\bmy (?:phd|ph\.d\.?|doctorate|master'?s|masters|bachelor'?s|degree|diploma)\b",
        r"\bged\b",
        r"\b(?:i|we) (?:dropped|drop) out\b",
        r"\b(?:dropout|drop-out|uneducated|well[- ]educated)\b",
        r"\bhigh school (?:diploma|graduate|grad)\b",
        r"\bcollege (?:graduate|grad|educated)\b",
        r"\b(?:didn'?t|never) (?:finish|finished|graduate|graduated)(?: high)? school\b",
        r"\bleft school at\b",
        r"\bi (?:went|didn'?t go|never went) to (?:college|university|uni)\b",
    ],
    "dialect_us_uk": [
        rf"\b{_ROLE} (?:a |an )?(?:british|english|american|scottish|welsh|brit|yank|yankee)\b",
        r"\b(?:british|american|us|uk) (?:english|spelling)\b",
        r"\bhere in (?:the )?(?:uk|us|usa|u\.s\.|britain|england|america|states)\b",
    ],
    "proficiency": [
        r"\bnative speaker\b",
        r"\bnon[- ]native\b",
        r"\bmy (?:first|second|native|mother) (?:language|tongue)\b",
        r"\benglish is (?:not|n'?t) my\b",
        r"\bmy english\b",
        r"\blearning english\b",
        r"\b(?:esl|efl)\b",
    ],
}

# Words spelled or named differently in UK and US English: the dialect set's assistant turns use
# none of them, so that only the user's own writing carries the cue.
DIALECT_MARKED = re.compile(
    r"\b(?:colou?rs?|favou?rites?|flavou?rs?|neighbou?rs?|odou?rs?|labou?r|behaviou?r|"
    r"honou?r|organi[sz](?:e[ds]?|ing)|reali[sz](?:e[ds]?|ing)|apologi[sz]e|itemi[sz]ed|"
    r"immuni[sz]ations?|practi[sc]ing|practise|centres?|centers?|theatres?|theaters?|metres?|"
    r"meters?|travell?(?:ed|ing)|cheques?|checks?|mum|mom|flats?|apartments?|lorry|trucks?|"
    r"holidays?|vacations?|queues?|lines?|petrol|gas|rubbish|trash|garbage|bins?|pavement|"
    r"sidewalk|autumn|fall|biscuits?|cookies?|chips|crisps|fries|fortnight|programmes?|"
    r"programs?|licen[cs]es?|tyres?|tires?|grey|gray|maths?|postcode|zip code|uni|college|"
    r"motorway|highway|freeway|mobile|cell|trainers|sneakers|lift|elevator|car park|"
    r"parking lot|cinema|movies?|films?|schemes?|p(?:a)?ediatricians?|prams?|buggy|buggies|"
    r"strollers?|pushchairs?|nappy|nappies|diapers?|soccer|football|box fan|electric bill|"
    r"pounds?|dollars?|bucks|quid|cents?|pence)\b|[$£]",
    re.IGNORECASE,
)


def _builtin(name: str) -> tuple[str, tuple[str, ...]]:
    info = next(i for i in list_datasets() if i.name == name)
    return info.attribute, info.labels


@pytest.fixture(scope="module")
def corpus() -> dict[str, Dataset]:
    return {name: load_dataset(str(HELDOUT / f"{name}.jsonl")) for name in NAMES}


def test_every_attribute_has_a_file_and_nothing_else_is_there() -> None:
    assert sorted(p.stem for p in HELDOUT.glob("*.jsonl")) == NAMES
    assert (HELDOUT / "README.md").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_heldout_corpus_loads_the_file(corpus: dict[str, Dataset], name: str) -> None:
    ds = heldout_corpus(name)
    assert ds.name == f"{name}_heldout"
    assert ds.content_hash() == corpus[name].content_hash()


@pytest.mark.parametrize("name", ["belief", "personas", "../transfer/age", "nope"])
def test_heldout_corpus_refuses_other_names_in_one_line(name: str) -> None:
    with pytest.raises(DatasetError) as err:
        heldout_corpus(name)
    assert "\n" not in str(err.value) and "no held-out corpus" in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_header_matches_the_builtin_set(name: str) -> None:
    first = (HELDOUT / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()[0]
    header = json.loads(first)["_probes_dataset"]
    attribute, labels = _builtin(name)
    assert header == {
        "name": f"{name}_heldout",
        "attribute": attribute,
        "labels": list(labels),
        "version": 1,
    }


@pytest.mark.parametrize("name", NAMES)
def test_size_and_label_balance(corpus: dict[str, Dataset], name: str) -> None:
    ds = corpus[name]
    _, labels = _builtin(name)
    assert ds.labels == labels
    counts = Counter(ex.label for ex in ds)
    assert set(counts) == set(labels)
    assert len(set(counts.values())) == 1, counts
    assert len(ds) >= MIN_CONVERSATIONS[name]


def _structure_problems(ex: Example) -> list[str]:
    """What is wrong with one conversation's turns (empty when nothing is)."""
    if ex.messages is None:
        return ["not a chat"]
    roles = [role for role, _ in ex.messages]
    problems = []
    if roles[0] != "user" or roles[-1] != "user":
        problems.append("must start and end with a user turn")
    if any(a == b for a, b in itertools.pairwise(roles)) or set(roles) != {"user", "assistant"}:
        problems.append("user and assistant turns must alternate")
    if not 3 <= roles.count("user") <= 6:
        problems.append("3 to 6 user turns")
    for role, content in ex.messages:
        if not content or content != content.strip():
            problems.append("empty or padded turn")
        if role == "assistant" and len(content.split()) > MAX_ASSISTANT_WORDS:
            problems.append(f"assistant turn over {MAX_ASSISTANT_WORDS} words")
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_turn_structure(corpus: dict[str, Dataset], name: str) -> None:
    assert {ex.id: p for ex in corpus[name] if (p := _structure_problems(ex))} == {}


@pytest.mark.parametrize(
    "turns",
    [
        ["user", "assistant", "user", "assistant", "user", "assistant"],
        ["assistant", "user", "assistant", "user", "assistant", "user"],
        ["user", "user", "assistant", "user"],
        ["user", "assistant", "user"],
        ["user", "system", "user", "assistant", "user"],
        ["user", "assistant"] * 7 + ["user"],
    ],
)
def test_the_structure_check_can_fail(turns: list[str]) -> None:
    ex = Example("x", "age", "adult", "x", messages=[(role, "hello there") for role in turns])
    assert _structure_problems(ex) != []


@pytest.mark.parametrize("name", NAMES)
def test_no_label_is_given_away_by_length(corpus: dict[str, Dataset], name: str) -> None:
    """Per label, the mean number of user turns and of user words stay close to each other."""
    turns: dict[str, list[int]] = {}
    words: dict[str, list[int]] = {}
    for ex in corpus[name]:
        user = [content for role, content in ex.messages or () if role == "user"]
        turns.setdefault(ex.label, []).append(len(user))
        words.setdefault(ex.label, []).append(sum(len(c.split()) for c in user))
    mean_turns = {label: sum(v) / len(v) for label, v in turns.items()}
    mean_words = {label: sum(v) / len(v) for label, v in words.items()}
    assert max(mean_turns.values()) - min(mean_turns.values()) <= MAX_TURN_GAP, mean_turns
    assert max(mean_words.values()) / min(mean_words.values()) <= MAX_WORD_RATIO, mean_words
    assert all(len(set(v)) > 1 for v in turns.values()), "every label varies its turn count"


def test_ids_and_groups_are_unique_across_the_corpus(corpus: dict[str, Dataset]) -> None:
    ids = [ex.id for ds in corpus.values() for ex in ds]
    assert len(ids) == len(set(ids))
    for name, ds in corpus.items():
        for ex in ds:
            assert ex.group == ex.id and ex.id.startswith(f"{name}-h"), ex.id


def test_no_two_conversations_repeat_a_user_turn(corpus: dict[str, Dataset]) -> None:
    seen: Counter[str] = Counter(
        " ".join(content.lower().split())
        for ds in corpus.values()
        for ex in ds
        for role, content in ex.messages or ()
        if role == "user" and len(content.split()) >= 5
    )
    assert [turn for turn, n in seen.items() if n > 1] == []


@pytest.mark.parametrize("name", NAMES)
def test_no_turn_states_the_label(corpus: dict[str, Dataset], name: str) -> None:
    patterns = [re.compile(p, re.IGNORECASE) for p in GIVEAWAYS[name]]
    found = [
        (ex.id, m.group(0))
        for ex in corpus[name]
        for _, content in ex.messages or ()
        for pattern in patterns
        if (m := pattern.search(content.replace("\u2019", "'")))
    ]
    assert found == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("age", "I'm 72 and my knees hurt"),
        ("age", "i turned 13 last week"),
        ("age", "as a teenager this is hard"),
        ("gender", "As a woman in tech, I get talked over"),
        ("gender", "I'm a dad of two"),
        ("socioeconomic", "we're broke until payday"),
        ("education", "I dropped out in tenth grade"),
        ("education", "my PhD advisor said no"),
        ("dialect_us_uk", "I'm British so I say flat"),
        ("proficiency", "sorry my English is not good"),
    ],
)
def test_the_giveaway_check_can_fail(name: str, text: str) -> None:
    assert any(re.search(p, text, re.IGNORECASE) for p in GIVEAWAYS[name])


def test_dialect_assistant_turns_carry_no_dialect_spelling(corpus: dict[str, Dataset]) -> None:
    found = [
        (ex.id, m.group(0))
        for ex in corpus["dialect_us_uk"]
        for role, content in ex.messages or ()
        if role == "assistant" and (m := DIALECT_MARKED.search(content))
    ]
    assert found == []


@pytest.mark.parametrize("text", ["Pick a favourite colour.", "Check the gas bill.", "About £20."])
def test_the_dialect_word_check_can_fail(text: str) -> None:
    assert DIALECT_MARKED.search(text)
