"""Content-addressed results of `probes run` stages, so a re-run redoes only what changed.

A stage's entry is keyed by a hash of everything its numbers depend on: the stage's name and
config, the model's describe() (weights fingerprint, device, dtype), the suite's own code and
data, the library versions, and the content of any file the config names. An entry holds the
stage's JSON result and a copy of every file the stage wrote into the run folder, so a hit puts
back the same figures and the same numbers. Entries are written whole under a temporary name
and renamed, so a run killed mid-stage leaves no entry for that stage and the next run redoes
it, and only it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from probes.atomic import atomic_write_bytes, atomic_write_json

FORMAT = "probes-stage-cache"
VERSION = 1
# Stages write their files under the run folder's figures/; only that folder is watched, so
# an --out that holds other things (a cache, a virtualenv) never leaks into an entry.
WATCHED = "figures"


@cache
def code_fingerprint() -> str:
    """sha256 over the suite's package files (code and built-in data): new code, new entries."""
    root = Path(__file__).resolve().parents[1]  # the whole probes package
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@cache
def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    names = ("torch", "transformers", "transformer-lens", "tokenizers", "numpy", "scipy")
    for name in (*names, "scikit-learn", "plotly", "kaleido"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def _png_available() -> bool:
    from probes.viz.export import browser_for_png

    return browser_for_png() is not None


def model_identity(describe: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a model's describe() that numbers depend on (not where it lives on disk)."""
    return {k: v for k, v in describe.items() if k != "location"}


def model_key(model: Any) -> dict[str, Any]:
    """What cached results of ``model`` are keyed on: its describe() without the folder, and
    a hash of its HF config (the weights fingerprint does not cover soft-cap, rope...)."""
    hf_config = {k: v for k, v in model.hf_model.config.to_dict().items() if k != "_name_or_path"}
    blob = json.dumps(hf_config, sort_keys=True, default=str).encode()
    return {
        **model_identity(model.describe()),
        "hf_config_sha256": hashlib.sha256(blob).hexdigest(),
    }


# Strings that look like a path (a separator, or a suffix of the files a config may name) are
# keyed by their file's content; names such as "dialect" or "auto" never are.
PATH_SUFFIXES = frozenset({".jsonl", ".csv", ".json", ".toml", ".txt"})


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or Path(value).suffix.lower() in PATH_SUFFIXES


def _with_file_contents(value: Any) -> Any:
    """Replace strings that name an existing file by (name, sha256 of its bytes)."""
    if isinstance(value, str) and value and len(value) < 4096 and _looks_like_path(value):
        path = Path(value).expanduser()
        try:
            if path.is_file():
                return {"file": value, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        except OSError:
            return value
        return value
    if isinstance(value, Mapping):
        return {str(k): _with_file_contents(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_with_file_contents(v) for v in value]
    return value


def stage_key(stage: str, inputs: Mapping[str, Any]) -> str:
    """The entry name for a stage run with these inputs."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "stage": stage,
        "code": code_fingerprint(),
        "libraries": library_versions(),
        "png": _png_available(),  # an entry made without a browser has no PNGs
        "inputs": _with_file_contents(dict(inputs)),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def as_json(result: Any) -> Any:
    """The result as results.json will hold it (tuples become lists, and so on)."""
    return json.loads(json.dumps(result, default=str))


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under the run folder's figures/, by path in the folder."""
    found: dict[str, tuple[int, int]] = {}
    watched = folder / WATCHED
    if not watched.exists():
        return found
    for path in watched.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            stat = path.stat()
            found[rel.as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


@dataclass(frozen=True)
class StageOutcome:
    """What a stage gave, and whether it came from an earlier run."""

    result: Any
    reused: bool
    key: str


@dataclass(frozen=True)
class StageCache:
    """Entries under ``root``; ``reuse=False`` recomputes every stage (and refreshes entries)."""

    root: Path
    reuse: bool = True

    def entry(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}"

    def run(
        self,
        stage: str,
        inputs: Mapping[str, Any],
        out: Path,
        compute: Callable[[], Any],
    ) -> StageOutcome:
        """The stage's result from its entry when there is one, else computed and stored."""
        key = stage_key(stage, inputs)
        entry = self.entry(stage, key)
        if self.reuse:
            restored = self._restore(entry, out)
            if restored is not None:
                return StageOutcome(restored, True, key)
        before = _snapshot(out)
        result = as_json(compute())
        written = sorted(rel for rel, sig in _snapshot(out).items() if before.get(rel) != sig)
        self._store(entry, stage, result, out, written)
        return StageOutcome(result, False, key)

    def _restore(self, entry: Path, out: Path) -> Any | None:
        """Copy an entry's files into the run folder; None when the entry is missing or broken."""
        try:
            manifest = json.loads((entry / "manifest.json").read_text())
            if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
                return None
            files = dict(manifest["files"])
            text = (entry / "result.json").read_bytes()
            blobs = {rel: (entry / "files" / rel).read_bytes() for rel in files}
            if hashlib.sha256(text).hexdigest() != manifest["result_sha256"]:
                return None
            if any(hashlib.sha256(blobs[rel]).hexdigest() != sha for rel, sha in files.items()):
                return None
            result = json.loads(text)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        for rel, blob in blobs.items():
            atomic_write_bytes(out / rel, blob)
        return result

    def _store(self, entry: Path, stage: str, result: Any, out: Path, written: list[str]) -> None:
        """Write the entry whole under a temporary name, then rename it into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep_leftovers()
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=self.root))
        try:
            files: dict[str, str] = {}
            for rel in written:
                blob = (out / rel).read_bytes()
                target = tmp / "files" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob)
                files[rel] = hashlib.sha256(blob).hexdigest()
            text = atomic_write_json(tmp / "result.json", result).read_bytes()
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "stage": stage,
                "result_sha256": hashlib.sha256(text).hexdigest(),
                "files": files,
            }
            atomic_write_json(tmp / "manifest.json", manifest)
            if entry.exists():  # a recompute (reuse=False) or a broken entry: replace it
                old = entry.with_name(f".{entry.name}.old-{os.getpid()}")
                os.replace(entry, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, entry)
        except OSError:
            # another run renamed its entry into place between our check and our rename: the
            # two hold the same result, so keep theirs and drop ours
            shutil.rmtree(tmp, ignore_errors=True)

    def _sweep_leftovers(self, older_than_s: float = 86_400.0) -> None:
        """Remove temporary folders that a killed run left behind (a day old or more)."""
        import time

        for path in self.root.glob(".*"):
            try:
                if path.is_dir() and time.time() - path.stat().st_mtime > older_than_s:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue


@dataclass
class StageRunner:
    """Runs the units of one `probes run` through a cache, and remembers which were reused."""

    cache: StageCache | None  # None: compute everything, store nothing
    model: Mapping[str, Any]  # the model's describe()
    out: Path
    say: Callable[[str], None] = print
    reused: list[str] = field(default_factory=list)

    def run(
        self, label: str, stage: str, inputs: Mapping[str, Any], compute: Callable[[], Any]
    ) -> Any:
        """``compute()``'s JSON result, or the stored one from a run with the same inputs."""
        if self.cache is None:
            return as_json(compute())
        keyed = {"model": model_identity(self.model), **inputs}
        outcome = self.cache.run(stage, keyed, self.out, compute)
        if outcome.reused:
            self.reused.append(label)
            self.say(f"{label}: reused from an earlier run with the same inputs ({outcome.key})")
        return outcome.result
