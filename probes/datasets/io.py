"""Read user datasets from JSONL or CSV and write any dataset back, losslessly and atomically.

Exported files start with one header line that keeps the name, attribute and class order:
JSONL: ``{"_probes_dataset": {...}}``; CSV: ``# probes-dataset: {...}``. Files without it load too.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.atomic import atomic_write_text
from probes.datasets.schema import Dataset, Example, normalize_messages
from probes.errors import DatasetError

FILE_SUFFIXES = (".jsonl", ".csv")
HEADER_KEY = "_probes_dataset"
CSV_HEADER_PREFIX = "# probes-dataset:"
CSV_COLUMNS = ("id", "attribute", "label", "group", "text", "messages", "pair_id", "meta")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Columns:
    """Which column of a user file holds each field."""

    text: str = "text"
    label: str = "label"
    group: str = "group"
    id: str = "id"
    pair: str = "pair_id"
    messages: str = "messages"
    attribute: str = "attribute"
    meta: str = "meta"

    def used(self) -> set[str]:
        """Every column name consumed by a field (the rest go into meta)."""
        return {
            self.text,
            self.label,
            self.group,
            self.id,
            self.pair,
            self.messages,
            self.attribute,
            self.meta,
        }


def looks_like_file(spec: str | os.PathLike[str]) -> bool:
    """True when `spec` names a dataset file by its extension or exists on disk."""
    path = Path(spec)
    return path.suffix.lower() in FILE_SUFFIXES or path.exists()


def _where(path: Path, line: int) -> str:
    return f"{path.name}, line {line}"


def _read_jsonl(path: Path) -> tuple[dict[str, Any] | None, list[tuple[int, dict[str, Any]]]]:
    """Header (if any) and (line number, row) pairs of a JSONL file."""
    header: dict[str, Any] | None = None
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open("r", encoding="utf-8-sig") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DatasetError(
                    f"{_where(path, number)} is not valid JSON ({err.msg})."
                ) from None
            except RecursionError:
                raise DatasetError(f"{_where(path, number)} is nested too deeply.") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{_where(path, number)} is not a JSON object.")
            try:
                json.dumps(row, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise DatasetError(
                    f"{_where(path, number)} holds text that is not valid Unicode "
                    "(a lone surrogate escape such as \\ud800)."
                ) from None
            if not rows and header is None and set(row) == {HEADER_KEY}:
                header = row[HEADER_KEY]
                if not isinstance(header, dict):
                    raise DatasetError(f"{_where(path, number)} has a malformed dataset header.")
                continue
            rows.append((number, row))
    return header, rows


def _read_csv(path: Path) -> tuple[dict[str, Any] | None, list[tuple[int, dict[str, Any]]]]:
    """Header (if any) and (line number, row) pairs of a CSV file; empty cells become None."""
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        content = handle.read()
    header: dict[str, Any] | None = None
    offset = 0
    if content.startswith(CSV_HEADER_PREFIX):
        first, _, content = content.partition("\n")
        offset = 1
        try:
            header = json.loads(first[len(CSV_HEADER_PREFIX) :])
        except (json.JSONDecodeError, RecursionError):
            raise DatasetError(f"{_where(path, 1)} has a malformed dataset header.") from None
        if not isinstance(header, dict):
            raise DatasetError(f"{_where(path, 1)} has a malformed dataset header.")
    reader = csv.DictReader(io.StringIO(content, newline=""))
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        if reader.fieldnames is None:
            return header, rows
        start = reader.line_num + 1 + offset
        for row in reader:
            number = start
            start = reader.line_num + 1 + offset
            if None in row:
                raise DatasetError(f"{_where(path, number)} has more cells than the header.")
            if any(value is None for value in row.values()):
                raise DatasetError(f"{_where(path, number)} has fewer cells than the header.")
            rows.append((number, {k: (v if v != "" else None) for k, v in row.items()}))
    except csv.Error as err:
        raise DatasetError(f"{path.name} is not valid CSV ({err}).") from None
    return header, rows


def _check_header(header: dict[str, Any], path: Path) -> dict[str, Any]:
    """The dataset header's name and attribute are strings, its labels a list of strings."""
    where = f"{path.name}: the dataset header's"
    for key in ("name", "attribute"):
        if header.get(key) is not None and not isinstance(header[key], str):
            raise DatasetError(f"{where} {key!r} must be a string.")
    labels = header.get("labels")
    if labels is not None and (
        not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
    ):
        raise DatasetError(f"{where} 'labels' must be a list of strings, got {labels!r:.40}.")
    return header


def _as_str(value: Any, what: str, where: str) -> str:
    """A label, id or group as a string; numbers and booleans are converted, others refused."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise DatasetError(f"{where}: the {what} must be a string, got {type(value).__name__}.")


def _maybe_json(value: Any, what: str, where: str) -> Any:
    """Decode CSV cells that carry JSON (messages, meta); pass JSONL values through."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise DatasetError(f"{where}: the {what} cell is not valid JSON.") from None
    return value


def _row_to_example(
    row: dict[str, Any], index: int, where: str, cols: Columns, attribute: str
) -> Example:
    """One file row as an Example; raises DatasetError naming the line."""
    label = row.get(cols.label)
    if label is None or label == "":
        raise DatasetError(f"{where} is missing the label field {cols.label!r}.")
    text = row.get(cols.text)
    messages = row.get(cols.messages)
    if text == "":
        text = None
    if text is not None and messages is not None:
        raise DatasetError(f"{where} has both {cols.text!r} and {cols.messages!r}; keep one.")
    if text is None and messages is None:
        raise DatasetError(f"{where} has neither a {cols.text!r} nor a {cols.messages!r} field.")
    if text is not None and not isinstance(text, str):
        raise DatasetError(f"{where}: the {cols.text!r} field must be a string.")
    turns = None
    if messages is not None:
        turns = normalize_messages(_maybe_json(messages, "messages", where), where)
        if not turns:
            raise DatasetError(f"{where} has an empty messages list.")
    raw_id = row.get(cols.id)
    group = row.get(cols.group)
    pair = row.get(cols.pair)
    meta = _maybe_json(row.get(cols.meta), "meta", where)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise DatasetError(f"{where}: the {cols.meta!r} field must be a JSON object.")
    extras = {k: v for k, v in row.items() if k not in cols.used() and v is not None}
    row_attribute = row.get(cols.attribute)
    return Example(
        id=_as_str(raw_id, "id", where) if raw_id is not None else str(index),
        attribute=attribute
        if row_attribute is None
        else _as_str(row_attribute, "attribute", where),
        label=_as_str(label, "label", where),
        group=_as_str(group, "group", where) if group not in (None, "") else "default",
        text=text,
        messages=turns,
        pair_id=_as_str(pair, "pair_id", where) if pair not in (None, "") else None,
        meta={**extras, **meta},
    )


def load_file(path: str | os.PathLike[str], cols: Columns, attribute: str | None) -> Dataset:
    """Load and validate a JSONL or CSV dataset file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DatasetError(f"Dataset file {str(path)!r} must end in .jsonl or .csv.")
    if not path.is_file():
        raise DatasetError(f"No dataset file at {str(path)!r}.")
    try:
        header, rows = _read_jsonl(path) if suffix == ".jsonl" else _read_csv(path)
    except UnicodeDecodeError:
        raise DatasetError(f"Dataset file {str(path)!r} is not UTF-8 text.") from None
    header = _check_header(header or {}, path)
    if not rows:
        raise DatasetError(f"Dataset file {str(path)!r} has no rows.")
    default_attr = attribute or header.get("attribute") or path.stem
    examples = [
        _row_to_example(row, i, _where(path, number), cols, default_attr)
        for i, (number, row) in enumerate(rows)
    ]
    if attribute is not None:
        examples = [_with_attribute(ex, attribute) for ex in examples]
    attributes = {ex.attribute for ex in examples}
    if len(attributes) > 1:
        raise DatasetError(
            f"Dataset file {str(path)!r} mixes attributes {sorted(attributes)}; "
            "pass attribute= to override."
        )
    header_labels = header.get("labels")
    if header_labels is not None:
        labels = tuple(str(label) for label in header_labels)
    else:
        labels = tuple(sorted({ex.label for ex in examples}))
    ds = Dataset(
        name=str(header.get("name") or path.stem),
        attribute=attributes.pop(),
        labels=labels,
        examples=tuple(examples),
    )
    ds.validate()
    return ds


def _with_attribute(ex: Example, attribute: str) -> Example:
    if ex.attribute == attribute:
        return ex
    return Example(ex.id, attribute, ex.label, ex.group, ex.text, ex.messages, ex.pair_id, ex.meta)


def sample_units(ds: Dataset, size: int | None, seed: int) -> Dataset:
    """At most `size` examples drawn at random by seed, keeping twins together, in file order."""
    if size is None or size >= len(ds):
        return ds
    if size < 1:
        raise DatasetError(f"Dataset size must be at least 1, got {size}.")
    units: dict[str, list[int]] = {}
    for i, ex in enumerate(ds.examples):
        units.setdefault(ex.pair_id if ex.pair_id is not None else f"\0{i}", []).append(i)
    order = list(units.values())
    random.Random(f"probes-sample|{seed}").shuffle(order)
    chosen: list[int] = []
    for unit in order:
        if len(chosen) + len(unit) <= size:
            chosen.extend(unit)
        if len(chosen) == size:
            break
    return ds.subset(sorted(chosen))


def _jsonl_lines(ds: Dataset) -> Iterator[str]:
    header = {
        HEADER_KEY: {
            "name": ds.name,
            "attribute": ds.attribute,
            "labels": list(ds.labels),
            "version": FORMAT_VERSION,
        }
    }
    yield json.dumps(header, ensure_ascii=False) + "\n"
    for record in ds.to_records():
        yield json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


def _csv_text(ds: Dataset) -> str:
    header: dict[str, Any] = {"name": ds.name, "attribute": ds.attribute, "labels": list(ds.labels)}
    header["version"] = FORMAT_VERSION
    buffer = io.StringIO(newline="")
    buffer.write(f"{CSV_HEADER_PREFIX} {json.dumps(header, ensure_ascii=False)}\n")
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for record in ds.to_records():
        messages = record.get("messages")
        writer.writerow(
            {
                "id": record["id"],
                "attribute": record["attribute"],
                "label": record["label"],
                "group": record["group"],
                "text": record.get("text") or "",
                "messages": json.dumps(messages, ensure_ascii=False) if messages else "",
                "pair_id": record["pair_id"] or "",
                "meta": json.dumps(record["meta"], ensure_ascii=False, allow_nan=False),
            }
        )
    return buffer.getvalue()


def export_dataset(ds: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write `ds` atomically to .jsonl or .csv (by suffix); `load_dataset` reads it back exactly."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DatasetError(f"Export path {str(path)!r} must end in .jsonl or .csv.")
    try:
        content = "".join(_jsonl_lines(ds)) if suffix == ".jsonl" else _csv_text(ds)
    except (TypeError, ValueError) as err:
        raise DatasetError(
            f"Dataset {ds.name!r} cannot be exported: {' '.join(str(err).split())}."
        ) from None
    return atomic_write_text(path, content)
