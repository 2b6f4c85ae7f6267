"""Fitted artefacts on disk: tensors in ``NAME.safetensors``, everything else in ``NAME.json``.

The JSON carries a format name, a version and the sha256 of the tensor file, so a mismatched
pair is refused. Both files are written atomically. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor

from probes.atomic import atomic_write_bytes, atomic_write_json
from probes.errors import ProbesError


def artifact_paths(path: str | Path) -> tuple[Path, Path]:
    """``path`` with or without suffix -> (``.safetensors``, ``.json``)."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return Path(f"{path}.safetensors"), Path(f"{path}.json")


def save_artifact(
    path: str | Path, fmt: str, version: int, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> tuple[Path, Path]:
    """Write the tensors and the JSON metadata of one artefact."""
    tensor_path, json_path = artifact_paths(path)
    blob = safetensors_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(tensor_path, blob)
    header = {"format": fmt, "version": version, "tensors_sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_json(json_path, {**header, **meta})
    return tensor_path, json_path


@contextmanager
def artifact_fields(path: str | Path) -> Iterator[None]:
    """Turn a missing or mistyped metadata field of a loaded artefact into one line."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as exc:
        raise ProbesError(
            f"{artifact_paths(path)[1]} has a missing or bad field ({exc})."
        ) from None


def load_artifact(path: str | Path, fmt: str, version: int) -> tuple[dict[str, Tensor], dict]:
    """Read an artefact written by :func:`save_artifact`; one-line errors for anything wrong."""
    tensor_path, json_path = artifact_paths(path)
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        blob = tensor_path.read_bytes()
    except (OSError, ValueError) as exc:
        raise ProbesError(f"Cannot read {json_path.with_suffix('')}: {exc}.") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ProbesError(f"{json_path} is not a saved {fmt.replace('probes-', '')}.")
    if meta.get("version") != version:
        raise ProbesError(f"{json_path} has {fmt} format version {meta.get('version')!r}.")
    if hashlib.sha256(blob).hexdigest() != meta.get("tensors_sha256"):
        raise ProbesError(f"{tensor_path} does not match {json_path} (checksum differs).")
    return safetensors_load(blob), meta
