"""Run one fuzz case in process and say how it ended: clean, traceback, silent, noisy, dirty."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.assets import Assets


@dataclass(frozen=True)
class Case:
    """One bad input. ``argv`` (CLI) or ``call`` (Python API); ``setup`` writes its files."""

    name: str
    kind: str  # the failure class: code, store, fs, length, value, leftover
    argv: Sequence[str] = ()
    call: Callable[[Path, Assets], Any] | None = None
    setup: Callable[[Path, Assets], None] | None = None
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None
    changes: tuple[str, ...] = ()  # paths under the work folder allowed to appear or change


@dataclass
class Outcome:
    """What a case did."""

    verdict: str  # clean | traceback | silent | noisy | dirty
    rc: int | None
    stderr: str
    changed: list[str] = field(default_factory=list)
    error: str = ""


def snapshot(*roots: Path) -> dict[str, str]:
    """path -> sha256 of every file under the roots (and 'dir' for folders)."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                out[str(path)] = "dir"
    return out


def _format(argv: Sequence[str], work: Path, assets: Assets) -> list[str]:
    names = {"w": str(work)}
    joined = " ".join(argv)
    for key in ("store", "store_gpt2", "store_age", "direction", "model_dir"):
        if "{" + key + "}" in joined:
            names[key] = str(getattr(assets, key))
    return [arg.format(**names) for arg in argv]


def enospc(*_args: Any, **_kwargs: Any) -> None:
    """Stand-in for a write on a full disk."""
    raise OSError(errno.ENOSPC, "No space left on device")


def run_case(case: Case, work: Path, assets: Assets) -> Outcome:
    """Set up, run, and judge one case; ``work`` is its own empty folder."""
    from probes.cli.app import main
    from probes.errors import ProbesError

    work.mkdir(parents=True, exist_ok=True)
    assets.build_all()  # before the snapshot: a case must not be blamed for building them
    if case.setup is not None:
        case.setup(work, assets)
    argv = _format(case.argv, work, assets) if case.argv else []
    before = snapshot(work, assets.root)
    err, out = io.StringIO(), io.StringIO()
    rc: int | None = None
    escaped = ""
    with (
        pytest.MonkeyPatch.context() as mp,
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(out),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        if case.patch is not None:
            case.patch(mp, work)
        try:
            if case.call is not None:
                case.call(work, assets)
                rc = 0
            else:
                rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 2
        except ProbesError as exc:
            rc = 2
            err.write(f"error: {exc}\n")
        except BaseException:  # what a user would see as a traceback
            escaped = traceback.format_exc()
    after = snapshot(work, assets.root)
    changed = sorted(
        p
        for p in set(before) | set(after)
        if before.get(p) != after.get(p)
        and not any(p.startswith(str(work / allowed)) for allowed in case.changes)
    )
    stderr = err.getvalue()
    lines = [line for line in stderr.splitlines() if line.strip()]
    if escaped or "Traceback" in stderr:
        verdict = "traceback"
    elif rc == 0:
        verdict = "silent"
    elif rc != 2 or len(lines) != 1:
        verdict = "noisy"
    elif changed:
        verdict = "dirty"
    else:
        verdict = "clean"
    return Outcome(
        verdict, rc, stderr, changed, escaped.strip().splitlines()[-1:][0] if escaped else ""
    )
