"""The example schema: one user text (or chat) with the attribute label the model may infer."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probes.errors import DatasetError

Messages = tuple[tuple[str, str], ...]
CHAT_ROLES = ("system", "user", "assistant")


def _one_line(message: str) -> str:
    """Collapse whitespace so that every error stays a single line."""
    return " ".join(message.split())


def normalize_messages(messages: Any, where: str = "example") -> Messages:
    """Turn a list of {"role", "content"} dicts or (role, content) pairs into a tuple of tuples."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise DatasetError(f"{where}: messages must be a list of {{role, content}} turns.")
    turns: list[tuple[str, str]] = []
    for turn in messages:
        if isinstance(turn, dict):
            role, content = turn.get("role"), turn.get("content")
        elif isinstance(turn, (list, tuple)) and len(turn) == 2:
            role, content = turn
        else:
            raise DatasetError(f"{where}: each message must be a {{role, content}} object.")
        if role not in CHAT_ROLES or not isinstance(content, str):
            raise DatasetError(
                f"{where}: message role must be one of {', '.join(CHAT_ROLES)} "
                f"with string content, got role {role!r}."
            )
        turns.append((role, content))
    return tuple(turns)


@dataclass(frozen=True)
class Example:
    """One user input (plain text or a chat) labelled with the attribute value its cues imply."""

    id: str
    attribute: str
    label: str
    group: str
    text: str | None = None
    messages: Messages | None = None
    pair_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if (self.text is None) == (self.messages is None):
            raise DatasetError(f"Example {self.id!r} must have exactly one of text and messages.")
        if self.messages is not None:
            object.__setattr__(
                self, "messages", normalize_messages(self.messages, f"Example {self.id!r}")
            )
        if self.meta is None:
            object.__setattr__(self, "meta", {})

    @property
    def user_text(self) -> str:
        """The plain text, or the user turns of a chat joined with newlines."""
        if self.text is not None:
            return self.text
        return "\n".join(content for role, content in self.messages or () if role == "user")

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict with every field; the canonical form used for hashing and export."""
        record: dict[str, Any] = {
            "id": self.id,
            "attribute": self.attribute,
            "label": self.label,
            "group": self.group,
        }
        if self.messages is not None:
            record["messages"] = [{"role": r, "content": c} for r, c in self.messages]
        else:
            record["text"] = self.text
        record["pair_id"] = self.pair_id
        record["meta"] = self.meta
        return record


@dataclass(frozen=True)
class DatasetInfo:
    """What `list_datasets` reports about a built-in dataset."""

    name: str
    attribute: str
    labels: tuple[str, ...]
    description: str
    default_size: int
    has_pairs: bool


@dataclass(frozen=True)
class Dataset:
    """An ordered, labelled collection of examples for one attribute; `labels` fixes class order."""

    name: str
    attribute: str
    labels: tuple[str, ...]
    examples: tuple[Example, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "examples", tuple(self.examples))

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> Example:
        if isinstance(index, slice):
            raise TypeError("Dataset indices must be integers; use subset() for several rows.")
        return self.examples[int(index)]

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, attribute={self.attribute!r}, "
            f"labels={self.labels!r}, n={len(self)})"
        )

    @property
    def texts(self) -> list[str]:
        """The user text of every example (chat examples: user turns joined)."""
        return [ex.user_text for ex in self.examples]

    @property
    def label_ids(self) -> np.ndarray:
        """int64 class indices into `labels`."""
        index = {label: i for i, label in enumerate(self.labels)}
        try:
            return np.array([index[ex.label] for ex in self.examples], dtype=np.int64)
        except KeyError as err:
            raise DatasetError(
                f"Dataset {self.name!r} has label {err.args[0]!r} that is not in its labels."
            ) from None

    @property
    def groups(self) -> list[str]:
        """Template family of every example, for grouped cross-validation splits."""
        return [ex.group for ex in self.examples]

    @property
    def pair_ids(self) -> list[str | None]:
        """Counterfactual twin id of every example (None when it has no twin)."""
        return [ex.pair_id for ex in self.examples]

    @property
    def ids(self) -> list[str]:
        """Example ids, unique within a dataset."""
        return [ex.id for ex in self.examples]

    def subset(self, indices: Iterable[int] | np.ndarray) -> Dataset:
        """A new dataset with the examples at `indices`, same name, attribute and labels."""
        chosen = tuple(self.examples[int(i)] for i in np.asarray(list(indices)).reshape(-1))
        return Dataset(self.name, self.attribute, self.labels, chosen)

    def pairs(self) -> list[tuple[int, int]]:
        """Index pairs (i, j) of twins sharing a pair_id, label of i before label of j in `labels`.

        Sets of more than two twins (one per class) give every pair of different labels.
        """
        order = {label: k for k, label in enumerate(self.labels)}
        members: dict[str, list[int]] = {}
        for i, ex in enumerate(self.examples):
            if ex.pair_id is not None:
                members.setdefault(ex.pair_id, []).append(i)
        out: list[tuple[int, int]] = []
        for idx in members.values():
            ranked = sorted(idx, key=lambda i: (order.get(self.examples[i].label, len(order)), i))
            for i, j in itertools.combinations(ranked, 2):
                if self.examples[i].label != self.examples[j].label:
                    out.append((i, j))
        return out

    def to_records(self) -> list[dict[str, Any]]:
        """Every example as its canonical JSON-able record."""
        return [ex.to_record() for ex in self.examples]

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of attribute, labels and examples (the name is left out)."""
        payload = {
            "attribute": self.attribute,
            "labels": list(self.labels),
            "examples": self.to_records(),
        }
        try:
            blob = json.dumps(
                payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )
        except (TypeError, ValueError) as err:
            raise DatasetError(
                f"Dataset {self.name!r} has meta that is not JSON-able: {_one_line(str(err))}."
            ) from None
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def validate(self) -> None:
        """Raise DatasetError unless the dataset is usable for training a probe."""
        where = f"Dataset {self.name!r}"
        if not self.examples:
            raise DatasetError(f"{where} is empty.")
        if len(set(self.labels)) != len(self.labels):
            raise DatasetError(f"{where} declares duplicate labels: {list(self.labels)}.")
        allowed = set(self.labels)
        seen: set[str] = set()
        for k, ex in enumerate(self.examples):
            _validate_example(ex, f"{where}, example {k}")
            if ex.label not in allowed:
                raise DatasetError(
                    f"{where}, example {ex.id!r} has unknown label {ex.label!r}; "
                    f"expected one of {list(self.labels)}."
                )
            if ex.id in seen:
                raise DatasetError(f"{where} has duplicate example id {ex.id!r}.")
            seen.add(ex.id)
        present = {ex.label for ex in self.examples}
        if len(present) < 2:
            raise DatasetError(
                f"{where} has a single class ({next(iter(present))!r}); probes need at least two."
            )
        if len(self.labels) < 2:
            raise DatasetError(f"{where} declares fewer than two labels: {list(self.labels)}.")


def _validate_example(ex: Example, where: str) -> None:
    """Raise DatasetError for a missing field or a text/messages conflict in one example."""
    for name in ("id", "attribute", "label", "group"):
        value = getattr(ex, name)
        if not isinstance(value, str) or not value:
            raise DatasetError(f"{where} is missing the field {name!r}.")
    if (ex.text is None) == (ex.messages is None):
        raise DatasetError(f"{where} ({ex.id!r}) must have exactly one of text and messages.")
    if ex.text is not None and (not isinstance(ex.text, str) or not ex.text.strip()):
        raise DatasetError(f"{where} ({ex.id!r}) has an empty text.")
    if ex.messages is not None and not any(r == "user" and c.strip() for r, c in ex.messages):
        raise DatasetError(f"{where} ({ex.id!r}) has no non-empty user turn.")
    if ex.pair_id is not None and (not isinstance(ex.pair_id, str) or not ex.pair_id):
        raise DatasetError(f"{where} ({ex.id!r}) has an empty pair_id; use null for none.")
    if not isinstance(ex.meta, dict):
        raise DatasetError(f"{where} ({ex.id!r}) has meta that is not an object.")


def make_dataset(
    name: str, attribute: str, labels: Sequence[str], examples: Iterable[Example]
) -> Dataset:
    """Build and validate a dataset in one step."""
    ds = Dataset(name, attribute, tuple(labels), tuple(examples))
    ds.validate()
    return ds
