"""Multi-turn conversation sets, generated deterministically from persona sketches and cue tables.

The data live in ``data/conversations/``: ``common.json`` holds what no label changes (persona
sketches = the topics a chat visits in order, neutral requests and assistant replies per topic,
follow-ups, registers) and ``{attribute}.json`` the label-dependent cue lines per topic. A cue
table is either ``{label: [lines]}`` or one list of lines with inline ``[[a|b|...]]``
alternatives in label order; lines may use the spec's ``{slots}``.

A twin set is one plan (family, topics, register, which line, request, reply and affix each turn
takes) rendered once per label, so twins differ only in their cue lines and every cue
accumulates over 3 to 6 user turns with an assistant reply between them. The attribute itself is
never named. Registers: terse (lower case, no final stop), chatty and emoji (affixes), typos
(letters swapped in the same words of every twin), formal (affixes, no contractions).
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from probes.datasets.builtin import (
    _Renderer,
    _SetState,
    read_data_json,
    shuffled_dataset,
    tidy_text,
)
from probes.datasets.schema import Dataset, DatasetInfo, Example
from probes.errors import DatasetError

TOPICS = ("hobbies", "work", "family", "money", "school", "health", "travel", "tech")
CONVERSATION_FILES: dict[str, str] = {
    "dialect_us_uk_conv": "dialect_us_uk.json",
    "age_conv": "age.json",
    "gender_conv": "gender.json",
    "education_conv": "education.json",
    "socioeconomic_conv": "socioeconomic.json",
    "proficiency_conv": "proficiency.json",
}
MIN_TURNS, MAX_TURNS = 3, 6
_NEUTRAL_TURN = 0.2  # chance that a later turn is a follow-up without a cue (at most one)
_WORD = re.compile(r"[A-Za-z]{5,}")
_CONTRACTIONS = {
    "I'm": "I am",
    "I've": "I have",
    "I'd": "I would",
    "I'll": "I will",
    "don't": "do not",
    "doesn't": "does not",
    "didn't": "did not",
    "can't": "cannot",
    "won't": "will not",
    "isn't": "is not",
    "haven't": "have not",
    "hasn't": "has not",
    "it's": "it is",
    "It's": "It is",
    "we're": "we are",
    "We're": "We are",
    "they're": "they are",
    "that's": "that is",
    "what's": "what is",
}
_CONTRACTION = re.compile(r"\b(" + "|".join(re.escape(k) for k in _CONTRACTIONS) + r")(?![\w'])")


def conversation_names() -> list[str]:
    """Names of the built-in conversation sets."""
    return list(CONVERSATION_FILES)


@cache
def _common() -> Mapping[str, Any]:
    return read_data_json("conversations", "common.json")


@cache
def _spec(name: str) -> Mapping[str, Any]:
    """The attribute file of a conversation set, its cue tables expanded to ``{label: lines}``."""
    if name not in CONVERSATION_FILES:
        raise DatasetError(
            f"Unknown conversation set {name!r}: use {', '.join(CONVERSATION_FILES)}."
        )
    spec = dict(read_data_json("conversations", CONVERSATION_FILES[name]))
    labels: list[str] = list(spec["labels"])
    cues: dict[str, dict[str, list[str]]] = {}
    for topic in TOPICS:
        table = spec["cues"].get(topic)
        if table is None:
            raise DatasetError(f"Conversation set {name!r} has no cue lines for topic {topic!r}.")
        if isinstance(table, list):
            table = {label: table for label in labels}
        if set(table) != set(labels) or not all(table[label] for label in labels):
            raise DatasetError(
                f"Conversation set {name!r}, topic {topic!r}: cue lines must list every label "
                f"of {labels}."
            )
        cues[topic] = {label: list(table[label]) for label in labels}
    spec["cues"] = cues
    return spec


@dataclass(frozen=True)
class _Turn:
    """The label-free plan of one user turn and the assistant reply after it."""

    topic: str
    cue: bool
    request: str
    cue_first: bool
    prefix: str
    suffix: str
    followup: str
    reply: str


def _plan(rng: random.Random, family: Mapping[str, Any], spec: Mapping[str, Any]) -> list[_Turn]:
    """Turns of one twin set: an ordered subset of the family's topics, each with its affixes."""
    common = _common()
    topics: list[str] = list(family["topics"])
    n = rng.randint(MIN_TURNS, min(MAX_TURNS, len(topics)))
    chosen = sorted(rng.sample(range(len(topics)), n))
    register = common["registers"][spec["_register"]]
    followups = spec.get("followups", common["followups"])
    neutral_at = rng.randrange(1, n) if rng.random() < _NEUTRAL_TURN * (n - 1) else -1
    turns = []
    for k, index in enumerate(chosen):
        topic = topics[index]
        parts = common["topics"][topic]
        turns.append(
            _Turn(
                topic=topic,
                cue=k != neutral_at,
                request=rng.choice(parts["requests"]),
                cue_first=rng.random() < 0.7,
                prefix=rng.choice(register.get("prefix", [""])),
                suffix=rng.choice(register.get("suffix", [""])),
                followup=rng.choice(followups),
                reply=rng.choice(parts["replies"]),
            )
        )
    return turns


def _typos(text: str, rate: float, seed: str) -> str:
    """Swap two inner letters of some words; a word's fate depends only on it and ``seed``."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        h = zlib.crc32(f"{seed}|{word}".encode())
        if (h % 1000) >= rate * 1000:
            return word
        i = 1 + (h // 1000) % (len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]

    return _WORD.sub(swap, text)


def _apply_register(text: str, register: Mapping[str, Any], seed: str) -> str:
    if register.get("no_contractions"):
        text = _CONTRACTION.sub(lambda m: _CONTRACTIONS[m.group(1)], text)
    if register.get("typo_rate"):
        text = _typos(text, float(register["typo_rate"]), seed)
    if register.get("lower"):
        text = text.lower()
    if register.get("strip_final"):
        text = text.rstrip(".!")
    return text


def _render_set(
    spec: Mapping[str, Any], turns: list[_Turn], state: _SetState, seed: str
) -> list[tuple[tuple[tuple[str, str], ...], dict[str, Any]]]:
    """(messages, meta) for every label of one twin set."""
    labels: list[str] = list(spec["labels"])
    register = _common()["registers"][spec["_register"]]
    with_requests = bool(spec.get("requests", True))
    renderer = _Renderer(labels, spec.get("slots", {}), spec["cues"], {}, state)
    out = []
    for label in labels:
        messages: list[tuple[str, str]] = []
        used: list[str] = []
        for k, turn in enumerate(turns):
            if turn.cue:
                cue = renderer.fill("{" + turn.topic + "}", label, used)
                request = turn.request if with_requests else ""
                body = f"{cue} {request}" if turn.cue_first else f"{request} {cue}"
            else:
                followup = renderer.fill(turn.followup, label, [])
                body = f"{followup} {turn.request}" if with_requests else followup
            body = _apply_register(tidy_text(body), register, seed)
            messages.append(("user", tidy_text(f"{turn.prefix}{body}{turn.suffix}")))
            if k < len(turns) - 1:
                messages.append(("assistant", turn.reply))
        meta = {
            "register": spec["_register"],
            "topics": [t.topic for t in turns],
            "user_turns": len(turns),
            "cues": [tidy_text(c) for c in used if c.strip()],
        }
        out.append((tuple(messages), meta))
    return out


def generate_conversations(name: str, size: int | None = None, seed: int = 0) -> Dataset:
    """Conversation set ``name``: ``size`` chats (rounded down to whole twin sets)."""
    spec = _spec(name)
    labels: list[str] = list(spec["labels"])
    families = _common()["families"]
    registers = list(_common()["registers"])
    size = int(spec["default_size"]) if size is None else int(size)
    n_sets = size // len(labels)
    if n_sets < 1:
        raise DatasetError(
            f"Dataset {name!r} needs size >= {len(labels)} (one chat per label), got {size}."
        )
    base, extra = divmod(n_sets, len(families))
    units: list[list[Example]] = []
    for f_index, family in enumerate(families):
        group = family["group"]
        rng = random.Random(f"probes|{name}|{seed}|{group}")
        seen: set[tuple[tuple[str, str], ...]] = set()
        for k in range(base + (1 if f_index < extra else 0)):
            pair_id = f"{name}:{group}:{k:03d}"
            for _attempt in range(40):
                register = registers[(f_index + k + rng.randrange(len(registers))) % len(registers)]
                set_spec = {**spec, "_register": register}
                turns = _plan(rng, family, set_spec)
                state = _SetState(rng, {}, {})
                members = _render_set(set_spec, turns, state, f"{pair_id}|{seed}")
                if not seen.intersection(m for m, _ in members):
                    break
            seen.update(m for m, _ in members)
            units.append(
                [
                    Example(
                        id=f"{pair_id}:{label}",
                        attribute=spec["attribute"],
                        label=label,
                        group=group,
                        messages=messages,
                        pair_id=pair_id,
                        meta=meta,
                    )
                    for label, (messages, meta) in zip(labels, members, strict=True)
                ]
            )
    return shuffled_dataset(name, spec["attribute"], labels, units, seed)


def conversation_info(name: str) -> DatasetInfo:
    """Static description of one conversation set."""
    spec = _spec(name)
    return DatasetInfo(
        name=name,
        attribute=spec["attribute"],
        labels=tuple(spec["labels"]),
        description=spec["description"],
        default_size=int(spec["default_size"]),
        has_pairs=True,
    )


def conversation_family_count() -> int:
    """Number of persona sketches (families) every conversation set draws from."""
    return len(_common()["families"])


__all__ = [
    "CONVERSATION_FILES",
    "TOPICS",
    "conversation_family_count",
    "conversation_info",
    "conversation_names",
    "generate_conversations",
]
