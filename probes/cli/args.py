"""Options shared by several subcommands: the model to load, and where activation stores are."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from probes.errors import ProbesError

if TYPE_CHECKING:
    from probes.cache.store import ActivationStore

DEFAULT_MODEL = "gemma-3-270m"
STORE_HELP = "an activation store folder, or a cache root holding one (probes cache --out)"


def add_model_args(
    parser: argparse.ArgumentParser, *, model: bool = True, default: str | None = DEFAULT_MODEL
) -> None:
    """``--model``, ``--device`` and ``--dtype`` (the model's dtype), the same everywhere.

    ``model=False`` leaves out ``--model`` (for ``probes info SPEC``)."""
    if model:
        parser.add_argument("--model", default=default, help="model spec (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    parser.add_argument(
        "--dtype",
        default=None,
        help="dtype to run the model in: float32 (default), float16, bfloat16",
    )


def resolve_store(path: str | Path) -> Path:
    """A store folder, or a cache root holding exactly one store (as ``probes cache --out``
    makes): the store's folder. A root with none or several stores is a ProbesError."""
    from probes.cache.store import MANIFEST

    folder = Path(path)
    if (folder / MANIFEST).is_file() or not folder.is_dir():
        return folder  # a store, or nothing: ActivationStore.open says which
    stores = sorted(p for p in folder.iterdir() if (p / MANIFEST).is_file())
    if len(stores) == 1:
        return stores[0]
    if not stores:
        return folder
    names = ", ".join(p.name for p in stores)
    raise ProbesError(
        f"{folder} is a cache root with {len(stores)} stores; pass one of them: {names}"
    )


def open_store(path: str | Path) -> ActivationStore:
    """Open the activation store at ``path`` (a store folder or a root with one store)."""
    from probes.cache.store import ActivationStore

    return ActivationStore.open(resolve_store(path))
