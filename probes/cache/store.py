"""The on-disk ActivationStore: safetensors shards plus manifest.json, content-addressed.

A store's folder name is a hash of the request that made it (model fingerprint, dataset hash,
rendering, sites, layers, position, dtype), so the same request finds the same store. Shards are
written under a temporary name and renamed; ``manifest.partial.json`` lists the shards finished so
far, so a killed extraction resumes from the last whole shard. ``manifest.json`` appears only when
every shard is written.

Integrity: the manifest records the size and sha256 of ``table.jsonl`` and of every shard, and
a digest of itself. Opening a store checks the digest, the structure, every size and the table's
hash (cheap: the table is read anyway); every shard read, and :meth:`ActivationStore.verify`,
hash the shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from probes import __version__
from probes.atomic import atomic_write_bytes, atomic_write_json, file_mode
from probes.cache.integrity import (
    MANIFEST,
    PARTIAL,
    SHARD_NAME,
    STORE_FORMAT,
    TABLE,
    check_shard,
    check_shard_size,
    file_sha256,
    manifest_digest,
    open_table,
    read_manifest,
    table_bytes,
)
from probes.errors import CacheError, FileError

SITE_HOOKS: dict[str, str] = {
    "resid_pre": "blocks.{layer}.hook_in",
    "resid_post": "blocks.{layer}.hook_out",
    "attn_out": "blocks.{layer}.attn.hook_out",
    "mlp_out": "blocks.{layer}.mlp.hook_out",
}
# Order in which the sites of one block fire during a forward pass.
SITE_ORDER: dict[str, int] = {"resid_pre": 0, "attn_out": 1, "mlp_out": 2, "resid_post": 3}


def tensor_name(site: str, layer: int) -> str:
    return f"{site}.{layer}"


def request_key(request: dict[str, Any]) -> str:
    """Short stable hash of a request: the store's folder name."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def describe_difference(stored: dict[str, Any], requested: dict[str, Any]) -> str:
    """One phrase naming what differs between two requests, e.g. 'model fingerprint a vs b'."""
    parts = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key), requested.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    parts.append(f"{key} {sub} {a.get(sub)!r} vs {b.get(sub)!r}")
        else:
            shown_a, shown_b = (repr(v)[:60] for v in (a, b))
            parts.append(f"{key} {shown_a} vs {shown_b}")
    return "; ".join(parts) or "nothing"


@dataclass
class ActivationStore:
    """A finished store: per (site, layer) a [rows, d_model] tensor, and a table of metadata."""

    path: Path
    manifest: dict[str, Any]
    table: list[dict[str, Any]]
    _tensors: dict[str, Tensor] = field(default_factory=dict, repr=False)
    _verified: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        model_fingerprint: str | None = None,
        dataset_hash: str | None = None,
    ) -> ActivationStore:
        """Open a finished store; refuse it if it was built for another model or dataset."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            if (path / PARTIAL).is_file():
                raise CacheError(f"store {path} is incomplete: re-run the extraction to resume it")
            raise CacheError(f"no activation store at {path} (no {MANIFEST})")
        manifest = read_manifest(manifest_path)
        request = manifest["request"]
        wanted: dict[str, Any] = {}
        if model_fingerprint is not None:
            wanted["model fingerprint"] = model_fingerprint
        if dataset_hash is not None:
            wanted["dataset hash"] = dataset_hash
        stored = {
            "model fingerprint": request["model"]["fingerprint"],
            "dataset hash": request["dataset_hash"],
        }
        stored = {k: v for k, v in stored.items() if k in wanted}
        if stored != wanted:
            what = (
                f"model {request['model']['name']}"
                if stored.get("model fingerprint") != wanted.get("model fingerprint")
                else f"dataset {request['dataset_hash'][:12]}"
            )
            raise CacheError(
                f"store {path} was built for {what}, not for this request "
                f"({describe_difference(stored, wanted)}): extract it again"
            )
        table = open_table(path, manifest)
        for shard in manifest["shards"]:
            if manifest["format"] == 1:
                check_shard(path, shard)  # no sizes recorded: hash instead
            else:
                check_shard_size(path, shard)
        return cls(path=path, manifest=manifest, table=table)

    # -- what it holds ----------------------------------------------------------------------
    @property
    def request(self) -> dict[str, Any]:
        return self.manifest["request"]

    @property
    def layers(self) -> list[int]:
        return list(self.request["layers"])

    @property
    def sites(self) -> list[str]:
        return list(self.request["sites"])

    @property
    def d_model(self) -> int:
        return int(self.request["d_model"])

    def __len__(self) -> int:
        return int(self.request["n_rows"])

    def column(self, name: str) -> list[Any]:
        """One metadata column (e.g. 'label', 'group', 'text'); missing values are None."""
        return [row.get(name) for row in self.table]

    @property
    def labels(self) -> list[Any]:
        return self.column("label")

    @property
    def texts(self) -> list[str]:
        return self.column("text")

    # -- tensors ----------------------------------------------------------------------------
    def get(self, layer: int, site: str = "resid_post") -> Float[Tensor, "n d_model"]:
        """Activations of every row at one layer and site."""
        if site not in self.sites:
            raise CacheError(f"site {site!r} is not in store {self.path} (has {self.sites})")
        if layer not in self.layers:
            raise CacheError(f"layer {layer} is not in store {self.path} (has {self.layers})")
        name = tensor_name(site, layer)
        if name not in self._tensors:
            self._tensors[name] = self.read([layer], site)[0]
        return self._tensors[name]

    def read(
        self,
        layers: Sequence[int],
        site: str = "resid_post",
        dtype: torch.dtype | None = None,
        *,
        out: Float[Tensor, "layers n d_model"] | None = None,
    ) -> Float[Tensor, "layers n d_model"]:
        """The listed layers of one site, read shard by shard from the memory-mapped files into
        one new tensor (cast to ``dtype`` on the way), or into ``out`` (whose dtype then wins:
        e.g. a slice of a larger buffer, so two stores need no concatenated copy); nothing is
        kept, so a store larger than memory can be worked through a few layers at a time."""
        if site not in self.sites:
            raise CacheError(f"site {site!r} is not in store {self.path} (has {self.sites})")
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise CacheError(f"layers {missing} are not in store {self.path} (has {self.layers})")
        if out is not None and tuple(out.shape) != (len(layers), len(self), self.d_model):
            raise CacheError(
                f"out has shape {tuple(out.shape)}, not [{len(layers)}, {len(self)}, "
                f"{self.d_model}] for {len(layers)} layers of store {self.path}"
            )
        if not self.manifest["shards"]:
            raise CacheError(f"store {self.path} has no shards")
        for shard in self.manifest["shards"]:
            if shard["file"] not in self._verified:
                check_shard(self.path, shard)
                self._verified.add(shard["file"])
            start, end = shard["rows"]
            with safe_open(str(self.path / shard["file"]), framework="pt") as handle:
                held = set(handle.keys())
                for i, layer in enumerate(layers):
                    name = tensor_name(site, layer)
                    part = handle.get_tensor(name) if name in held else None
                    if part is None or tuple(part.shape) != (end - start, self.d_model):
                        found = None if part is None else tuple(part.shape)
                        raise CacheError(
                            f"shard {shard['file']} of store {self.path} does not hold {name} "
                            f"as [{end - start}, {self.d_model}] (found {found})"
                        )
                    if out is None:
                        shape = (len(layers), len(self), part.shape[-1])
                        out = torch.empty(shape, dtype=dtype or part.dtype)
                    out[i, start:end] = part
        if out is None:  # unreachable: there is at least one shard
            raise CacheError(f"store {self.path} has no shards")
        return out

    def stack(self, site: str = "resid_post") -> Float[Tensor, "n layer d_model"]:
        """Activations of every row at every stored layer, stacked on dimension 1."""
        return torch.stack([self.get(layer, site) for layer in self.layers], dim=1)

    def verify(self) -> None:
        """Hash every file of the store against the manifest; a CacheError names a bad one."""
        open_table(self.path, self.manifest)
        for shard in self.manifest["shards"]:
            check_shard(self.path, shard)

    def nbytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


def store_identity(store: ActivationStore) -> dict[str, Any]:
    """What two stores must share to be compared: model, width, attribute."""
    attributes = sorted({str(a) for a in store.column("attribute") if a is not None})
    return {
        "model": store.request["model"]["name"],
        "fingerprint": store.request["model"]["fingerprint"],
        "d_model": store.d_model,
        "attribute": ",".join(attributes) or None,
    }


class StoreWriter:
    """Writes one store shard by shard; resumes a partial store left by a killed run.

    A ``manifest.partial.json`` that cannot be read (cut short, edited) is not a dead end: the
    store starts again, keeping no shard it cannot vouch for."""

    def __init__(self, folder: Path, request: dict[str, Any], table: Sequence[dict[str, Any]]):
        self.folder = folder
        self.request = request
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FileError.from_os(exc, folder, "make the store folder") from exc
        self.shards: dict[int, dict[str, Any]] = {}
        partial = folder / PARTIAL
        previous = self._read_partial(partial)
        if previous is not None and previous["request"] != request:
            difference = describe_difference(previous["request"], request)
            raise CacheError(
                f"partial store {folder} was started for another request ({difference}); "
                "delete it or choose another folder"
            )
        blob = table_bytes(table)
        self.table_entry = {
            "file": TABLE,
            "bytes": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
        }
        if previous is not None:
            for shard in previous["shards"]:
                if not (
                    isinstance(shard, dict)
                    and SHARD_NAME.fullmatch(str(shard.get("file")))
                    and type(shard.get("index")) is int
                ):
                    continue  # an entry it cannot vouch for: that shard is computed again
                path = folder / shard["file"]
                if path.is_file() and file_sha256(path) == shard.get("sha256"):
                    self.shards[int(shard["index"])] = shard
        table_path = folder / TABLE
        if not (table_path.is_file() and file_sha256(table_path) == self.table_entry["sha256"]):
            atomic_write_bytes(table_path, blob)
        self._write_partial()

    @staticmethod
    def _read_partial(partial: Path) -> dict[str, Any] | None:
        if not partial.is_file():
            return None
        try:
            return read_manifest(partial, structure=False)
        except CacheError as exc:
            print(f"[probes] {exc}; starting this store again", file=sys.stderr, flush=True)
            return None

    def done(self, index: int) -> bool:
        return index in self.shards

    def write_shard(self, index: int, rows: tuple[int, int], tensors: dict[str, Tensor]) -> None:
        name = f"shard-{index:05d}.safetensors"
        tmp = self.folder / f".{name}.tmp-{os.getpid()}"
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
            os.chmod(tmp, file_mode())  # like every other file, not the 0600 of a temp file
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.folder / name)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise FileError.from_os(exc, self.folder / name) from exc
            raise
        self.shards[index] = {
            "index": index,
            "file": name,
            "rows": list(rows),
            "bytes": (self.folder / name).stat().st_size,
            "sha256": file_sha256(self.folder / name),
        }
        self._write_partial()

    def _manifest(self, complete: bool) -> dict[str, Any]:
        manifest = {
            "format": STORE_FORMAT,
            "library_version": __version__,
            "complete": complete,
            "request": self.request,
            "table": self.table_entry,
            "shards": [self.shards[i] for i in sorted(self.shards)],
        }
        manifest["digest"] = manifest_digest(manifest)
        return manifest

    def _write_partial(self) -> None:
        atomic_write_json(self.folder / PARTIAL, self._manifest(complete=False))

    def finish(self) -> ActivationStore:
        """Write the manifest, remove the partial one and any temporary file left by a kill."""
        for stray in self.folder.glob(".*.tmp*"):
            stray.unlink(missing_ok=True)
        atomic_write_json(self.folder / MANIFEST, self._manifest(complete=True))
        (self.folder / PARTIAL).unlink(missing_ok=True)
        return ActivationStore.open(self.folder)


def iter_shards(n_rows: int, shard_size: int) -> Iterator[tuple[int, int, int]]:
    """(shard index, first row, end row) covering ``n_rows`` rows."""
    for index, start in enumerate(range(0, n_rows, shard_size)):
        yield index, start, min(start + shard_size, n_rows)


def write_store(
    folder: str | os.PathLike[str],
    activations: dict[str, Tensor],
    table: Sequence[dict[str, Any]],
    *,
    layers: Sequence[int] | None = None,
    model: dict[str, str] | None = None,
    position: dict[str, Any] | None = None,
    shard_size: int = 1024,
) -> ActivationStore:
    """Write activations made elsewhere ({site: [n, layer, d_model]}) as a finished store.

    Useful for importing another tool's activations or building synthetic stores in tests.
    """
    first = next(iter(activations.values()))
    n_rows, n_layers, d_model = first.shape
    if len(table) != n_rows:
        raise CacheError(f"{len(table)} table rows for {n_rows} activation rows")
    layer_ids = list(layers) if layers is not None else list(range(n_layers))
    dtype = str(first.dtype).removeprefix("torch.")
    request = {
        "model": model or {"name": "external", "fingerprint": "external"},
        "dataset_hash": hashlib.sha256(
            json.dumps(list(table), sort_keys=True, default=str).encode()
        ).hexdigest(),
        "rendering": "external",
        "sites": sorted(activations, key=lambda s: SITE_ORDER.get(s, 99)),
        "layers": layer_ids,
        "position": position or {"kind": "external"},
        "dtype": dtype,
        "n_rows": n_rows,
        "d_model": d_model,
        "shard_size": shard_size,
    }
    writer = StoreWriter(Path(folder), request, table)
    for index, start, end in iter_shards(n_rows, shard_size):
        tensors = {
            tensor_name(site, layer): acts[start:end, i].contiguous()
            for site, acts in activations.items()
            for i, layer in enumerate(layer_ids)
        }
        writer.write_shard(index, (start, end), tensors)
    return writer.finish()
