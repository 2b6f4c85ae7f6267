"""The one validation layer: every argument and config value is checked here, before any work.

Two faces of the same checks. ``check_*`` functions raise a one-line :class:`ProbesError`
subclass for the Python API and the config readers; the ``*_arg`` factories wrap them as
argparse ``type=`` callables, so a bad command-line value is a one-line usage error (exit 2)
before a model is loaded. A new subcommand adopts the layer by using these types for its
options (see docs/architecture.md, "Validating input").
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from probes.errors import ConfigError, ProbesError

T = TypeVar("T")


# -- values -----------------------------------------------------------------------------------


def check_int(
    name: str, value: Any, *, minimum: int = 1, error: type[ProbesError] = ProbesError
) -> int:
    """``value`` as an int >= ``minimum``; booleans and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        what = "positive" if minimum == 1 else f"at least {minimum}"
        raise error(f"{name} must be {what}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    error: type[ProbesError] = ProbesError,
) -> float:
    """``value`` as a finite float (optionally > 0 or >= 0); booleans, NaN and inf are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise error(f"{name} must be a finite number, got {value!r}")
    if positive and number <= 0:
        raise error(f"{name} must be positive, got {value!r}")
    if nonnegative and number < 0:
        raise error(f"{name} must not be negative, got {value!r}")
    return number


def check_text(text: Any, where: str, error: type[ProbesError] = ProbesError) -> str:
    """``text`` as a string that is valid Unicode (no lone surrogates), else a one-line error."""
    if not isinstance(text, str):
        raise error(f"{where} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise error(
            f"{where} is not valid Unicode (lone surrogate U+{ord(bad):04X} at character "
            f"{exc.start})"
        ) from None
    return text


def check_device(device: Any, error: type[ProbesError] = ProbesError) -> Any:
    """A device string that exists on this machine (``None`` = auto), checked without a model."""
    import torch

    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise error(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise error(f"device {device!r} is not available: this torch build sees no CUDA GPU")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise error(
                f"device {device!r} is not available: {torch.cuda.device_count()} CUDA GPU(s)"
            )
    elif parsed.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise error(f"device {device!r} is not available on this machine")
    elif parsed.type != "cpu":
        raise error(f"unsupported device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    return device


def check_dtype(dtype: Any, error: type[ProbesError] = ProbesError) -> Any:
    """A float dtype name (or ``None``)."""
    if dtype is not None and dtype not in ("float32", "float16", "bfloat16"):
        raise error(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
    return dtype


# -- paths ------------------------------------------------------------------------------------


def check_out_dir(path: str | os.PathLike[str], name: str = "--out") -> Path:
    """A folder that exists or can be made: no file in its place or above it, writable."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ProbesError(f"{name} {folder} is a file, not a folder")
    _check_ancestors(folder, name)
    return folder


def check_out_file(path: str | os.PathLike[str], name: str = "--out") -> Path:
    """A file that can be written: not a folder, its folder possible."""
    target = Path(path)
    if target.is_dir():
        raise ProbesError(f"{name} {target} is a folder, not a file")
    _check_ancestors(target.parent, name)
    return target


def _check_ancestors(folder: Path, name: str) -> None:
    """The nearest existing ancestor must be a writable folder."""
    probe = folder.absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe != folder.absolute() and not probe.is_dir():
        raise ProbesError(f"{name} {folder}: {probe} is a file, so no folder can be made there")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ProbesError(f"{name} {folder}: {probe} is not writable")
    if probe != folder.absolute() and _is_pseudo_fs(probe):
        raise ProbesError(f"{name} {folder}: {probe} is a system folder; nothing can be made there")


def _is_pseudo_fs(path: Path) -> bool:
    """/proc and /sys take no new folders, whatever their permission bits say."""
    resolved = path.resolve()
    return any(resolved == Path(p) or Path(p) in resolved.parents for p in ("/proc", "/sys"))


# -- argparse types ---------------------------------------------------------------------------


def as_arg(check: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap ``check(text)`` as an argparse type: a ProbesError becomes a one-line usage error."""

    def convert(text: str) -> T:
        try:
            return check(text)
        except ProbesError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(check, "__name__", "value")
    return convert


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProbesError(f"expected an integer, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ProbesError(f"expected a number, got {text!r}") from None


def int_arg(minimum: int = 1) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum``."""
    return as_arg(lambda text: check_int("the value", _parse_int(text), minimum=minimum))


def float_arg(*, positive: bool = False, nonnegative: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number (optionally > 0 or >= 0)."""
    return as_arg(
        lambda text: check_float(
            "the value", _parse_float(text), positive=positive, nonnegative=nonnegative
        )
    )


def floats_arg(*, nonzero: bool = False) -> Callable[[str], list[float]]:
    """argparse type: a non-empty comma-separated list of finite numbers."""

    def check(text: str) -> list[float]:
        values = [check_float("each value", _parse_float(x)) for x in text.split(",") if x.strip()]
        if not values:
            raise ProbesError(f"expected comma-separated numbers, got {text!r}")
        if nonzero and 0.0 in values:
            raise ProbesError("0 is not a strength: it changes nothing")
        return values

    return as_arg(check)


text_arg = as_arg(lambda text: check_text(text, "the text"))
device_arg = as_arg(check_device)


def _checked_path(check: Callable[[str], Path]) -> Callable[[str], str]:
    """A path argument checked by ``check`` and kept as the string the user typed."""

    def keep(text: str) -> str:
        check(text)
        return text

    return as_arg(keep)


out_dir_arg = _checked_path(check_out_dir)
out_file_arg = _checked_path(check_out_file)


def config_float(where: str, value: Any, **kwargs: Any) -> float:
    """A config number, as :func:`check_float` with :class:`ConfigError`."""
    return check_float(where, value, error=ConfigError, **kwargs)
