"""Behaviour items: prompts whose next token shows whether the model tailored its answer.

Items are stored as twin templates in ``data/behavior/{attribute}.json``; an inline cue
``[[a|b]]`` lists one alternative per cue value, in the file's ``cues`` order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from probes.datasets.builtin import read_data_json, tidy_text
from probes.datasets.render import RenderSpec, attach, render
from probes.datasets.schema import Example
from probes.errors import DatasetError

BEHAVIOR_FILES: dict[str, str] = {
    "dialect": "dialect.json",
    "belief": "belief.json",
    "proficiency": "proficiency.json",
}
_INLINE = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
DEFAULT_SPEC = RenderSpec()


@dataclass(frozen=True)
class BehaviorItem:
    """A prompt and answer sets; metric = logsumexp logp(positive) - logsumexp logp(negative)."""

    id: str
    attribute: str
    text: str
    cue: str
    answer_prefix: str
    answers: dict[str, tuple[str, ...]] = field(hash=False)
    positive: str
    negative: str
    pair_id: str | None = None
    group: str = "default"

    def __post_init__(self) -> None:
        where = f"Behaviour item {self.id!r}"
        for name in ("id", "attribute", "text", "cue", "positive", "negative", "group"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise DatasetError(f"{where} is missing the field {name!r}.")
        if not isinstance(self.answer_prefix, str):
            raise DatasetError(f"{where}: answer_prefix must be a string.")
        if not isinstance(self.answers, Mapping) or not self.answers:
            raise DatasetError(f"{where} needs a non-empty mapping of answer sets.")
        answers: dict[str, tuple[str, ...]] = {}
        for key, values in self.answers.items():
            if isinstance(values, str):
                values = (values,)
            values = tuple(values)
            if not values or not all(isinstance(v, str) and v for v in values):
                raise DatasetError(f"{where}: answer set {key!r} must be non-empty strings.")
            answers[str(key)] = values
        object.__setattr__(self, "answers", answers)
        for role in ("positive", "negative"):
            if getattr(self, role) not in answers:
                raise DatasetError(
                    f"{where}: {role} set {getattr(self, role)!r} is not one of {sorted(answers)}."
                )
        if self.positive == self.negative:
            raise DatasetError(f"{where}: positive and negative answer sets must differ.")

    def as_example(self) -> Example:
        """The item's text as an Example (label = cue), for rendering and caching."""
        return Example(
            id=self.id,
            attribute=self.attribute,
            label=self.cue,
            group=self.group,
            text=self.text,
            pair_id=self.pair_id,
        )


def _expand(template: str, position: int) -> str:
    """Pick alternative `position` of every inline cue."""
    return tidy_text(_INLINE.sub(lambda m: m.group(1).split("|")[position], template))


def _items_from_spec(spec: Mapping[str, Any]) -> list[BehaviorItem]:
    """Expand a behaviour spec into twin items, one per cue value."""
    attribute: str = spec["attribute"]
    cues: list[str] = spec["cues"]
    answer_sets: Mapping[str, Mapping[str, Sequence[str]]] = spec.get("answer_sets", {})
    items: list[BehaviorItem] = []
    for raw in spec["items"]:
        answers = raw["answers"]
        if isinstance(answers, str):
            if answers not in answer_sets:
                raise DatasetError(f"Behaviour item {raw['id']!r} names unknown set {answers!r}.")
            answers = answer_sets[answers]
        for inline in _INLINE.findall(raw["text"]):
            if len(inline.split("|")) != len(cues):
                raise DatasetError(
                    f"Behaviour item {raw['id']!r}: inline cue [[{inline}]] needs "
                    f"{len(cues)} alternatives."
                )
        pair_id = f"{attribute}:{raw['id']}"
        for position, cue in enumerate(cues):
            items.append(
                BehaviorItem(
                    id=f"{pair_id}:{cue}",
                    attribute=attribute,
                    text=_expand(raw["text"], position),
                    cue=cue,
                    answer_prefix=raw.get("answer_prefix", spec.get("answer_prefix", "")),
                    answers={k: tuple(v) for k, v in answers.items()},
                    positive=raw.get("positive", spec["positive"]),
                    negative=raw.get("negative", spec["negative"]),
                    pair_id=pair_id,
                    group=raw.get("group", "default"),
                )
            )
    return items


def behavior_attributes() -> list[str]:
    """Attributes that have built-in behaviour items."""
    return list(BEHAVIOR_FILES)


def load_behavior_items(attribute: str) -> list[BehaviorItem]:
    """The built-in behaviour items for `attribute` (twins adjacent, in file order)."""
    if attribute not in BEHAVIOR_FILES:
        raise DatasetError(
            f"No behaviour items for attribute {attribute!r}; "
            f"available: {', '.join(BEHAVIOR_FILES)}."
        )
    return _items_from_spec(read_data_json("behavior", BEHAVIOR_FILES[attribute]))


def render_behavior(
    items: Iterable[BehaviorItem],
    spec: RenderSpec = DEFAULT_SPEC,
    tokenizer: Any = None,
) -> list[str]:
    """Rendered prompt + " " + answer_prefix (just the prompt when the prefix is empty)."""
    items = list(items)
    prompts = render([item.as_example() for item in items], spec, tokenizer)
    return [
        attach(prompt, f" {item.answer_prefix}") if item.answer_prefix else prompt
        for prompt, item in zip(prompts, items, strict=True)
    ]


def multi_token_answers(items: Iterable[BehaviorItem], tokenizer: Any) -> list[tuple[str, str]]:
    """(item id, answer) for every answer that is not exactly one token without special tokens."""
    bad: list[tuple[str, str]] = []
    cache: dict[str, int] = {}
    for item in items:
        for values in item.answers.values():
            for answer in values:
                if answer not in cache:
                    cache[answer] = len(tokenizer(answer, add_special_tokens=False).input_ids)
                if cache[answer] != 1:
                    bad.append((item.id, answer))
    return bad
