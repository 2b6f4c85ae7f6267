"""Label sets aligned across sources: a label map (``old=new``), spelling normalised, unions.

Imported files spell labels their own way ("older adult", "Older-Adult", "older_adult"). Every
label is normalised (lower case, runs of spaces and hyphens become one underscore), then a
user's map renames it; a dataset is aligned to a target label order, and several aligned
datasets become one union whose ids, groups and pair ids keep their source's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from probes.datasets.schema import Dataset, Example
from probes.errors import DatasetError

_SEPARATORS = re.compile(r"[\s\-]+")


def normalize_label(label: str) -> str:
    """``"Older Adult"`` and ``"older-adult"`` become ``"older_adult"``."""
    return _SEPARATORS.sub("_", str(label).strip().lower())


def parse_label_map(items: Iterable[str] | None) -> dict[str, str]:
    """``["old=new", ...]`` (as given to ``--label-map``) as a dict on normalised labels."""
    out: dict[str, str] = {}
    for item in items or ():
        old, sep, new = str(item).partition("=")
        if not sep or not old.strip() or not new.strip():
            raise DatasetError(f"--label-map takes old=new, got {item!r}.")
        out[normalize_label(old)] = normalize_label(new)
    return out


def map_label(label: str, label_map: Mapping[str, str] | None = None) -> str:
    """The label after normalising its spelling and applying ``label_map``."""
    key = normalize_label(label)
    return (label_map or {}).get(key, key)


def align_labels(
    dataset: Dataset,
    labels: Sequence[str] | None = None,
    label_map: Mapping[str, str] | None = None,
) -> Dataset:
    """``dataset`` with every label mapped; ``labels`` (mapped too) fixes the class order.

    A label that the target set does not know is a one-line error naming the map to add.
    """
    mapped = tuple(dict.fromkeys(map_label(label, label_map) for label in dataset.labels))
    target = mapped if labels is None else tuple(map_label(x, label_map) for x in labels)
    examples = []
    for ex in dataset.examples:
        new = map_label(ex.label, label_map)
        if new not in target:
            raise DatasetError(
                f"Dataset {dataset.name!r} has label {ex.label!r}, which is none of "
                f"{list(target)}; add --label-map {normalize_label(ex.label)}=<one of them>."
            )
        examples.append(_replace(ex, label=new))
    ds = Dataset(dataset.name, dataset.attribute, target, tuple(examples))
    ds.validate()
    return ds


def _replace(ex: Example, **changes: str | None) -> Example:
    fields = {
        "id": ex.id,
        "attribute": ex.attribute,
        "label": ex.label,
        "group": ex.group,
        "text": ex.text,
        "messages": ex.messages,
        "pair_id": ex.pair_id,
        "meta": dict(ex.meta),
    }
    fields.update(changes)
    return Example(**fields)  # type: ignore[arg-type]


def union_datasets(
    datasets: Sequence[Dataset],
    name: str = "union",
    label_map: Mapping[str, str] | None = None,
) -> Dataset:
    """One dataset from several of the same attribute, labels aligned to the first one's.

    Ids, groups and pair ids are prefixed with their source's name (so families stay distinct
    and grouped folds never split one), and ``meta["source"]`` names the source.
    """
    if not datasets:
        raise DatasetError("A union needs at least one dataset.")
    attribute = datasets[0].attribute
    labels = tuple(map_label(x, label_map) for x in datasets[0].labels)
    for ds in datasets[1:]:
        for label in ds.labels:
            mapped = map_label(label, label_map)
            if mapped not in labels:
                labels = (*labels, mapped)
    examples: list[Example] = []
    for ds in datasets:
        for ex in align_labels(ds, labels, label_map).examples:
            examples.append(
                _replace(
                    ex,
                    id=f"{ds.name}/{ex.id}",
                    attribute=attribute,
                    group=f"{ds.name}/{ex.group}",
                    pair_id=None if ex.pair_id is None else f"{ds.name}/{ex.pair_id}",
                )
            )
            examples[-1].meta["source"] = ds.name
    union = Dataset(name, attribute, labels, tuple(examples))
    union.validate()
    return union


__all__ = ["align_labels", "map_label", "normalize_label", "parse_label_map", "union_datasets"]
