"""`probes datasets list | show | export`: inspect and export the built-in and user datasets."""

from __future__ import annotations

import argparse
from collections import Counter

from probes.datasets import export_dataset, list_datasets, load_dataset
from probes.datasets.schema import Dataset
from probes.validate import int_arg, out_file_arg

_positive_int = int_arg(1)


def _table(rows: list[list[str]]) -> str:
    """Left-aligned plain-text table; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _twin_groups(ds: Dataset) -> int:
    """Number of distinct pair ids that have at least two members."""
    counts = Counter(pid for pid in ds.pair_ids if pid is not None)
    return sum(1 for n in counts.values() if n >= 2)


def _labels_cell(labels: tuple[str, ...], limit: int = 48) -> str:
    text = ",".join(labels)
    return text if len(text) <= limit else f"{len(labels)} labels ({text[: limit - 16]}...)"


def handle_list(args: argparse.Namespace) -> int:
    """Print one row per built-in dataset."""
    rows = [["name", "attribute", "labels", "size", "families", "pairs"]]
    for info in list_datasets():
        ds = load_dataset(info.name)
        rows.append(
            [
                info.name,
                info.attribute,
                _labels_cell(info.labels),
                str(len(ds)),
                str(len(set(ds.groups))),
                str(_twin_groups(ds)) if info.has_pairs else "-",
            ]
        )
    print(_table(rows))
    return 0


def _one_line(text: str) -> str:
    return text.replace("\r", "").replace("\n", " \u23ce ")


def handle_show(args: argparse.Namespace) -> int:
    """Print a summary of a built-in dataset or a JSONL/CSV file, then its first examples."""
    ds = load_dataset(
        args.name,
        size=args.size,
        seed=args.seed,
        text_col=args.text_col,
        label_col=args.label_col,
        group_col=args.group_col,
        id_col=args.id_col,
        pair_col=args.pair_col,
        attribute=args.attribute,
    )
    counts = Counter(ex.label for ex in ds)
    groups = Counter(ds.groups)
    print(f"name:       {ds.name}")
    print(f"attribute:  {ds.attribute}")
    print(f"examples:   {len(ds)}")
    print("labels:     " + ", ".join(f"{label} ({counts.get(label, 0)})" for label in ds.labels))
    print(f"families:   {len(groups)} ({', '.join(sorted(groups))})")
    print(f"twin sets:  {_twin_groups(ds)}")
    print(f"hash:       {ds.content_hash()}")
    shown = ds.examples[: max(args.n, 0)]
    if shown:
        print()
        rows = [["id", "label", "group", "text"]]
        rows += [[ex.id, ex.label, ex.group, _one_line(ex.user_text)] for ex in shown]
        print(_table(rows))
    return 0


def handle_export(args: argparse.Namespace) -> int:
    """Write a dataset to .jsonl or .csv and report where."""
    ds = load_dataset(args.name, size=args.size, seed=args.seed)
    path = export_dataset(ds, args.out)
    print(f"wrote {len(ds)} examples of {ds.name!r} to {path} (sha256 {ds.content_hash()[:12]})")
    return 0


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size", type=_positive_int, default=None, help="number of examples (default: built-in)"
    )
    parser.add_argument("--seed", type=int, default=0, help="generation / sampling seed")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `datasets` command with `list`, `show` and `export` to a CLI."""
    parser = subparsers.add_parser(
        "datasets", help="list, inspect and export datasets", description=__doc__
    )
    commands = parser.add_subparsers(dest="datasets_command", metavar="COMMAND", required=True)

    p_list = commands.add_parser("list", help="table of the built-in datasets")
    p_list.set_defaults(func=handle_list)

    p_show = commands.add_parser("show", help="summary and first examples of a dataset or file")
    p_show.add_argument("name", help="built-in name or path to a .jsonl / .csv file")
    p_show.add_argument("--n", type=int_arg(0), default=5, help="examples to print (default 5)")
    _add_sampling(p_show)
    for field, default in (
        ("text", "text"),
        ("label", "label"),
        ("group", "group"),
        ("id", "id"),
        ("pair", "pair_id"),
    ):
        p_show.add_argument(
            f"--{field}-col", default=default, help=f"file column for {field} (default {default})"
        )
    p_show.add_argument("--attribute", default=None, help="override the file's attribute name")
    p_show.set_defaults(func=handle_show)

    p_export = commands.add_parser("export", help="write a dataset to .jsonl or .csv")
    p_export.add_argument("name", help="built-in name or path to a .jsonl / .csv file")
    p_export.add_argument(
        "--out", required=True, type=out_file_arg, help="output path ending in .jsonl or .csv"
    )
    _add_sampling(p_export)
    p_export.set_defaults(func=handle_export)
