"""Integrity of an activation store's files: the manifest digest, sizes and checksums.

Cheap checks run on every open (the manifest's digest and structure, the table's sha256 since
the table is read anyway, every shard's size); full hashes of the shards run on every shard read
and in ``ActivationStore.verify()``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probes.errors import CacheError, FileError

STORE_FORMAT = 2
READABLE_FORMATS = (1, 2)  # format 1 (no table checksum, no digest): shards hashed on open
SHARD_NAME = re.compile(r"shard-\d{5}\.safetensors")
MANIFEST = "manifest.json"
PARTIAL = "manifest.partial.json"
TABLE = "table.jsonl"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its ``digest`` key."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_manifest(path: Path, *, structure: bool = True) -> dict[str, Any]:
    """A store's manifest (final or partial), checked: JSON, format, digest and (unless
    ``structure=False``) the shape of its request and shard list."""
    try:
        manifest = json.loads(path.read_bytes())
    except OSError as exc:
        raise FileError.from_os(exc, path, "read") from exc
    except (ValueError, RecursionError) as exc:
        raise CacheError(f"{path} is not valid JSON: {getattr(exc, 'msg', exc)}") from None
    if not isinstance(manifest, dict):
        raise CacheError(f"{path} is not a store manifest (not a JSON object)")
    if manifest.get("format") not in READABLE_FORMATS:
        raise CacheError(
            f"store {path.parent} has format {manifest.get('format')!r}, not {STORE_FORMAT}"
        )
    if manifest["format"] >= 2 and manifest.get("digest") != manifest_digest(manifest):
        raise CacheError(
            f"{path} was changed after the store was written (its digest does not match): "
            "delete the store and extract it again"
        )
    problem = _structure_problem(manifest) if structure else ""
    if not isinstance(manifest.get("request"), dict) or not isinstance(
        manifest.get("shards"), list
    ):
        problem = problem or "no request or no shard list"
    if problem:
        raise CacheError(f"{path} is not a valid store manifest: {problem}")
    return manifest


def _structure_problem(manifest: dict[str, Any]) -> str:
    """What is missing or malformed in a manifest, or '' when it is well formed."""
    request = manifest.get("request")
    if not isinstance(request, dict):
        return "no request"
    model = request.get("model")
    if not isinstance(model, dict) or not {"name", "fingerprint"} <= set(model):
        return "request.model needs a name and a fingerprint"
    for key in ("n_rows", "d_model"):
        if isinstance(request.get(key), bool) or not isinstance(request.get(key), int):
            return f"request.{key} is not an integer"
    layers, sites = request.get("layers"), request.get("sites")
    if not isinstance(layers, list) or not all(type(x) is int for x in layers):
        return "request.layers is not a list of integers"
    if not isinstance(sites, list) or not all(isinstance(x, str) for x in sites):
        return "request.sites is not a list of site names"
    if "dataset_hash" not in request:
        return "no request.dataset_hash"
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return "no shard list"
    covered = 0
    for shard in shards:
        if not isinstance(shard, dict) or not SHARD_NAME.fullmatch(str(shard.get("file"))):
            return "a shard entry without a shard-NNNNN.safetensors file name"
        rows = shard.get("rows")
        if not (isinstance(rows, list) and len(rows) == 2 and all(type(r) is int for r in rows)):
            return f"shard {shard['file']} has no row range"
        if rows[0] != covered or rows[1] <= rows[0]:
            return f"shard {shard['file']} covers rows {rows}, expected to start at {covered}"
        covered = rows[1]
    if manifest.get("complete") and covered != request["n_rows"]:
        return f"the shards cover {covered} rows, the request says {request['n_rows']}"
    return ""


def open_table(folder: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Read ``table.jsonl``, checked against the manifest's size and sha256 and its row count."""
    path = folder / TABLE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CacheError(f"{TABLE} of store {folder} is missing") from None
    except OSError as exc:
        raise FileError.from_os(exc, path, "read") from exc
    entry = manifest.get("table")
    if isinstance(entry, dict) and (
        len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256")
    ):
        raise CacheError(
            f"{TABLE} of store {folder} was changed after the store was written (checksum "
            "mismatch): delete the store and extract it again"
        )
    table = parse_table(data, path)
    n_rows = manifest["request"]["n_rows"]
    if manifest.get("complete", True) and len(table) != n_rows:
        raise CacheError(f"{TABLE} of store {folder} has {len(table)} rows, the manifest {n_rows}")
    return table


def check_shard_size(folder: Path, shard: dict[str, Any]) -> None:
    path = folder / shard["file"]
    if not path.is_file():
        raise CacheError(f"shard {shard['file']} of store {folder} is missing")
    if path.stat().st_size != shard.get("bytes"):
        raise CacheError(
            f"shard {shard['file']} of store {folder} is corrupt (size {path.stat().st_size}, "
            f"manifest {shard.get('bytes')})"
        )


def check_shard(folder: Path, shard: dict[str, Any]) -> None:
    path = folder / shard["file"]
    if not path.is_file():
        raise CacheError(f"shard {shard['file']} of store {folder} is missing")
    if file_sha256(path) != shard.get("sha256"):
        raise CacheError(f"shard {shard['file']} of store {folder} is corrupt (checksum mismatch)")


def parse_table(data: bytes, where: Path) -> list[dict[str, Any]]:
    """The rows of a ``table.jsonl``; a CacheError names a bad line."""
    rows = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CacheError(f"{where} is not UTF-8") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise CacheError(f"{where}, line {number} is not valid JSON") from None
        if not isinstance(row, dict):
            raise CacheError(f"{where}, line {number} is not a JSON object")
        rows.append(row)
    return rows


def read_table(path: Path) -> list[dict[str, Any]]:
    """The rows of a table file ([] when there is none), unchecked against a manifest."""
    return parse_table(path.read_bytes(), path) if path.is_file() else []


def table_bytes(table: Sequence[dict[str, Any]]) -> bytes:
    """How a table is written: one sorted-key JSON object per line."""
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in table).encode("utf-8")
