"""Implicit-cue datasets: the schema, built-in sets, JSONL/CSV import and export, rendering."""

from __future__ import annotations

import os

from probes.datasets.behavior import (
    BehaviorItem,
    behavior_attributes,
    load_behavior_items,
    multi_token_answers,
    render_behavior,
)
from probes.datasets.builtin import (
    PERSONAS,
    Persona,
    builtin_info,
    builtin_names,
    family_count,
    generate,
)
from probes.datasets.conversations import (
    conversation_info,
    conversation_names,
    generate_conversations,
)
from probes.datasets.io import Columns, export_dataset, load_file, looks_like_file, sample_units
from probes.datasets.render import RenderSpec, render
from probes.datasets.schema import Dataset, DatasetInfo, Example
from probes.errors import DatasetError

__all__ = [
    "PERSONAS",
    "BehaviorItem",
    "Dataset",
    "DatasetInfo",
    "Example",
    "Persona",
    "RenderSpec",
    "behavior_attributes",
    "conversation_names",
    "export_dataset",
    "family_count",
    "heldout_corpus",
    "list_datasets",
    "load_behavior_items",
    "load_dataset",
    "multi_token_answers",
    "render",
    "render_behavior",
    "transfer_corpus",
]


def _packaged_corpus(folder: str, name: str, what: str) -> Dataset:
    from importlib.resources import files

    path = files("probes.datasets").joinpath("data", folder, f"{name}.jsonl")
    if not path.is_file():
        raise DatasetError(f"no {what} for {name!r}")
    return load_dataset(str(path))


def transfer_corpus(name: str) -> Dataset:
    """The hand-written chatty corpus for a built-in set (a different style, for transfer tests)."""
    return _packaged_corpus("transfer", name, "transfer corpus")


HELDOUT_NAMES = ("age", "dialect_us_uk", "education", "gender", "proficiency", "socioeconomic")


def heldout_corpus(name: str) -> Dataset:
    """The hand-written held-out conversations for a built-in set: a final test set only.

    Never choose a layer, position, frame or setting on it, and never train on it
    (probes/datasets/data/heldout/README.md).
    """
    from importlib.resources import files

    if name not in HELDOUT_NAMES:
        raise DatasetError(
            f"no held-out corpus for {name!r}; there is one for {', '.join(HELDOUT_NAMES)}"
        )
    path = files("probes.datasets").joinpath("data", "heldout", f"{name}.jsonl")
    return load_dataset(str(path))


def list_datasets() -> list[DatasetInfo]:
    """Every built-in dataset (templated sets, then conversation sets) with its attribute,
    labels and default size."""
    return [builtin_info(name) for name in builtin_names()] + [
        conversation_info(name) for name in conversation_names()
    ]


def load_dataset(
    spec: str | os.PathLike[str],
    *,
    size: int | None = None,
    seed: int = 0,
    text_col: str = "text",
    label_col: str = "label",
    group_col: str = "group",
    id_col: str = "id",
    pair_col: str = "pair_id",
    attribute: str | None = None,
) -> Dataset:
    """A built-in dataset by name, or a .jsonl / .csv file (plain text or chat rows).

    Built-ins are generated from `seed` with `size` examples (default: their default size,
    rounded down to whole twin sets). Files keep their rows; `size` then samples whole twin
    groups by `seed`. Column names map file fields; `attribute` overrides the file's attribute.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise DatasetError(f"Dataset size must be a positive integer, got {size!r}.")
    name = os.fspath(spec)
    if name in builtin_names():
        ds = generate(name, size=size, seed=seed)
        if attribute is not None and attribute != ds.attribute:
            raise DatasetError(
                f"Built-in dataset {name!r} has attribute {ds.attribute!r}, not {attribute!r}."
            )
        return ds
    if name in conversation_names():
        ds = generate_conversations(name, size=size, seed=seed)
        if attribute is not None and attribute != ds.attribute:
            raise DatasetError(
                f"Built-in dataset {name!r} has attribute {ds.attribute!r}, not {attribute!r}."
            )
        return ds
    if not looks_like_file(name):
        known = builtin_names() + conversation_names()
        raise DatasetError(
            f"Unknown dataset {name!r}: not a built-in ({', '.join(known)}) "
            "and not a .jsonl or .csv path."
        )
    columns = Columns(text=text_col, label=label_col, group=group_col, id=id_col, pair=pair_col)
    ds = load_file(name, columns, attribute)
    return sample_units(ds, size, seed)
