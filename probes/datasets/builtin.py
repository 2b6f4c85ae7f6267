"""Built-in implicit-cue datasets, generated deterministically from JSON templates and lexicons.

A spec file in ``data/`` holds template families. Each family yields *twin sets*: one example
per label that share every neutral filler and differ only in the label's cue strings.

Placeholders in templates, cue strings and record fields:
``{slot}`` a neutral filler (same for every label of a set), a cue (label-dependent list), or a
field of the family's chosen record; ``{Slot}`` capitalises the value's first letter;
``[[a|b|...]]`` an inline cue with one alternative per label, in label order.
Optional ``openers`` / ``closers`` (dataset or family level) are neutral sentences put around
every template, shared by all labels of a set, so that families are not one fixed string.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, NamedTuple

from probes.datasets.schema import Dataset, DatasetInfo, Example
from probes.errors import DatasetError

DATA_PACKAGE = "probes.datasets"
_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
_INLINE = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
_SPACES = re.compile(r"[ \t]{2,}")
_MAX_DEPTH = 8
_RETRIES = 40

BUILTIN_FILES: dict[str, str] = {
    "dialect_us_uk": "dialect_us_uk.json",
    "age": "age.json",
    "gender": "gender.json",
    "education": "education.json",
    "socioeconomic": "socioeconomic.json",
    "proficiency": "proficiency.json",
    "belief": "belief.json",
    "personas": "personas.json",
}

# The built-in attribute datasets a probe is fitted on (every one but the persona list), in the
# order runs and reader bundles report them.
PROBED_DATASETS: tuple[str, ...] = (
    "dialect_us_uk",
    "age",
    "gender",
    "education",
    "socioeconomic",
    "proficiency",
    "belief",
)


class Persona(NamedTuple):
    """One identity of the persona audit: its group and the words after "I am"."""

    group: str
    text: str


def read_data_json(*parts: str) -> Any:
    """Parse a JSON file shipped in probes/datasets/data/."""
    node = resources.files(DATA_PACKAGE).joinpath("data", *parts)
    try:
        return json.loads(node.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"Packaged data file {'/'.join(parts)!r} is missing.") from None


@cache
def _spec(name: str) -> Mapping[str, Any]:
    """The parsed spec of a built-in dataset (personas expanded into labels and cues)."""
    if name not in BUILTIN_FILES:
        raise DatasetError(
            f"Unknown dataset {name!r}: not a built-in ({', '.join(BUILTIN_FILES)}) "
            "and not a .jsonl or .csv path."
        )
    spec = read_data_json(BUILTIN_FILES[name])
    if "personas" in spec:
        spec = _expand_personas(spec)
    _check_spec(spec)
    return spec


def _expand_personas(spec: dict[str, Any]) -> dict[str, Any]:
    """Turn the persona table into labels, a 'persona' cue and per-label meta."""
    personas: dict[str, dict[str, str]] = spec["personas"]
    baseline = spec.get("baseline_label", "none")
    labels = [*personas, baseline]
    cue = {key: [f"I am {p['text']}. "] for key, p in personas.items()}
    cue[baseline] = [""]
    label_meta = {key: {"persona_group": p["group"]} for key, p in personas.items()}
    label_meta[baseline] = {"persona_group": baseline}
    return {
        **spec,
        "labels": labels,
        "cues": {**spec.get("cues", {}), "persona": cue},
        "label_meta": label_meta,
    }


def _load_personas() -> Mapping[str, Persona]:
    table = read_data_json(BUILTIN_FILES["personas"])["personas"]
    return MappingProxyType({k: Persona(v["group"], v["text"]) for k, v in table.items()})


def _check_spec(spec: Mapping[str, Any]) -> None:
    """Catch authoring mistakes early: unknown labels in cues, wrong inline arity."""
    labels = spec["labels"]
    n = len(labels)
    for family in spec["families"]:
        cues = {**spec.get("cues", {}), **family.get("cues", {})}
        for slot, table in cues.items():
            if set(table) != set(labels):
                raise DatasetError(
                    f"Spec {spec['name']!r}, family {family['group']!r}: cue {slot!r} "
                    f"must list exactly the labels {labels}."
                )
        texts = list(family.get("templates", spec.get("templates", [])))
        if not texts:
            raise DatasetError(
                f"Spec {spec['name']!r}, family {family['group']!r} has no templates."
            )
        texts += [alt for table in cues.values() for alts in table.values() for alt in alts]
        for text in texts:
            for inline in _INLINE.findall(text):
                if len(inline.split("|")) != n:
                    raise DatasetError(
                        f"Spec {spec['name']!r}, family {family['group']!r}: inline cue "
                        f"[[{inline}]] needs {n} alternatives."
                    )


@dataclass
class _SetState:
    """Random choices shared by all labels of one twin set."""

    rng: random.Random
    values: dict[str, str]
    picks: dict[str, int]


def _capitalise(value: str) -> str:
    return value[:1].upper() + value[1:]


class _Renderer:
    """Fills one family's placeholders for a given label inside a twin set."""

    def __init__(
        self,
        labels: list[str],
        slots: Mapping[str, list[str]],
        cues: Mapping[str, Mapping[str, list[str]]],
        record: Mapping[str, Any],
        state: _SetState,
    ) -> None:
        self.labels = labels
        self.slots = slots
        self.cues = cues
        self.record = record
        self.state = state

    def fill(self, text: str, label: str, used_cues: list[str], depth: int = 0) -> str:
        """Substitute placeholders and inline cues for `label`, recording the cue strings used."""
        if depth > _MAX_DEPTH:
            raise DatasetError(f"Template placeholders nest too deeply in {text!r}.")
        position = self.labels.index(label)

        def inline(match: re.Match[str]) -> str:
            value = self.fill(match.group(1).split("|")[position], label, used_cues, depth + 1)
            if value:
                used_cues.append(value)
            return value

        def placeholder(match: re.Match[str]) -> str:
            raw = match.group(1)
            key = raw.lower()
            value = self._value(key, label, used_cues, depth)
            return _capitalise(value) if raw[0].isupper() else value

        text = _INLINE.sub(inline, text)
        return _PLACEHOLDER.sub(placeholder, text)

    def _value(self, key: str, label: str, used_cues: list[str], depth: int) -> str:
        state = self.state
        if key in self.cues:
            alternatives = self.cues[key][label]
            if key not in state.picks:
                state.picks[key] = state.rng.randrange(1 << 30)
            raw = alternatives[state.picks[key] % len(alternatives)]
            value = self.fill(raw, label, used_cues, depth + 1)
            if value:
                used_cues.append(value)
            return value
        if key in self.record:
            field = self.record[key]
            if isinstance(field, dict):
                field = field[label]
                value = self.fill(str(field), label, used_cues, depth + 1)
                used_cues.append(value)
                return value
            return self.fill(str(field), label, used_cues, depth + 1)
        if key in self.slots:
            if key not in state.values:
                state.values[key] = state.rng.choice(self.slots[key])
            return self.fill(state.values[key], label, used_cues, depth + 1)
        raise DatasetError(f"Template placeholder {{{key}}} has no slot, cue or record field.")


def tidy_text(text: str) -> str:
    """Collapse doubled spaces left by empty cues and trim the ends."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return "\n".join(lines).strip()


def _family_sets(
    spec: Mapping[str, Any], family: Mapping[str, Any], n_sets: int, seed: int
) -> list[list[tuple[str, dict[str, Any]]]]:
    """`n_sets` twin sets for one family: per set, (text, meta) for each label in order."""
    labels: list[str] = list(spec["labels"])
    slots = {**spec.get("slots", {}), **family.get("slots", {})}
    cues = {**spec.get("cues", {}), **family.get("cues", {})}
    records: list[Mapping[str, Any]] = family.get("records", [{}])
    templates: list[str] = family.get("templates", spec.get("templates"))
    openers: list[str] = family.get("openers", spec.get("openers", [""]))
    closers: list[str] = family.get("closers", spec.get("closers", [""]))
    meta_fields: Mapping[str, str] = spec.get("meta", {})
    label_meta: Mapping[str, Mapping[str, Any]] = spec.get("label_meta", {})
    rng = random.Random(f"probes|{spec['name']}|{seed}|{family['group']}")
    seen: set[str] = set()
    sets: list[list[tuple[str, dict[str, Any]]]] = []
    for _ in range(n_sets):
        for _attempt in range(_RETRIES):
            t_index = rng.randrange(len(templates))
            r_index = rng.randrange(len(records))
            template = f"{rng.choice(openers)} {templates[t_index]} {rng.choice(closers)}"
            state = _SetState(rng, {}, {})
            renderer = _Renderer(labels, slots, cues, records[r_index], state)
            members: list[tuple[str, dict[str, Any]]] = []
            for label in labels:
                used: list[str] = []
                text = tidy_text(renderer.fill(template, label, used))
                meta: dict[str, Any] = {"template": t_index}
                if len(records) > 1:
                    meta["record"] = r_index
                for field, pattern in meta_fields.items():
                    meta[field] = tidy_text(renderer.fill(pattern, label, []))
                meta.update(label_meta.get(label, {}))
                meta["cues"] = [tidy_text(c) for c in used if c.strip()]
                members.append((text, meta))
            texts = [text for text, _ in members]
            if not seen.intersection(texts):
                break
        seen.update(texts)
        sets.append(members)
    return sets


def generate(name: str, size: int | None = None, seed: int = 0) -> Dataset:
    """Generate built-in dataset `name`: `size` examples (rounded down to whole twin sets)."""
    spec = _spec(name)
    labels: list[str] = list(spec["labels"])
    families = spec["families"]
    size = int(spec["default_size"]) if size is None else int(size)
    n_sets = size // len(labels)
    if n_sets < 1:
        raise DatasetError(
            f"Dataset {name!r} needs size >= {len(labels)} (one example per label), got {size}."
        )
    base, extra = divmod(n_sets, len(families))
    twins = bool(spec.get("twins", True))
    units: list[list[Example]] = []
    for f_index, family in enumerate(families):
        count = base + (1 if f_index < extra else 0)
        group = family["group"]
        for k, members in enumerate(_family_sets(spec, family, count, seed)):
            pair_id = f"{name}:{group}:{k:03d}"
            units.append(
                [
                    Example(
                        id=f"{pair_id}:{label}",
                        attribute=spec["attribute"],
                        label=label,
                        group=group,
                        text=text,
                        pair_id=pair_id if twins else None,
                        meta=meta,
                    )
                    for label, (text, meta) in zip(labels, members, strict=True)
                ]
            )
    return shuffled_dataset(name, spec["attribute"], labels, units, seed)


def shuffled_dataset(
    name: str, attribute: str, labels: Sequence[str], units: list[list[Example]], seed: int
) -> Dataset:
    """The dataset of ``units`` (twin sets, kept together) in a seeded order, validated."""
    random.Random(f"probes|{name}|{seed}|order").shuffle(units)
    examples = tuple(ex for unit in units for ex in unit)
    ds = Dataset(name=name, attribute=attribute, labels=tuple(labels), examples=examples)
    ds.validate()
    return ds


def builtin_names() -> list[str]:
    """Names of the built-in datasets."""
    return list(BUILTIN_FILES)


def builtin_info(name: str) -> DatasetInfo:
    """Static description of one built-in dataset."""
    spec = _spec(name)
    return DatasetInfo(
        name=name,
        attribute=spec["attribute"],
        labels=tuple(spec["labels"]),
        description=spec["description"],
        default_size=int(spec["default_size"]),
        has_pairs=bool(spec.get("twins", True)),
    )


def family_count(name: str) -> int:
    """Number of template families (groups) of a built-in dataset."""
    return len(_spec(name)["families"])


PERSONAS: Mapping[str, Persona] = _load_personas()
