"""Errors a user can cause. Each carries one clear sentence; the CLI prints it and exits 2."""

from __future__ import annotations


class ProbesError(Exception):
    """Base class for every error caused by user input (bad file, unknown model, stale cache)."""


class ModelNotFoundError(ProbesError):
    """A model spec that names nothing on this machine."""


class DatasetError(ProbesError):
    """A dataset that is missing, malformed or unusable for the requested job."""


class CacheError(ProbesError):
    """An activation store that is corrupt, stale or built for another request."""


class ConfigError(ProbesError):
    """A configuration value or file that cannot be used."""


class FileError(ProbesError):
    """A file or folder the operating system would not read or write (full disk, a file in the
    way, no permission). The message names the path and the cause."""

    @classmethod
    def from_os(cls, exc: OSError, path: object = None, action: str = "write") -> FileError:
        """One line from an ``OSError``: 'cannot write PATH: No space left on device'."""
        return cls(os_error_message(exc, path, action))


def os_error_message(exc: OSError, path: object = None, action: str = "write") -> str:
    """'cannot ACTION PATH: CAUSE' for an OSError; the path is the error's own when it has one."""
    where = path if path is not None else exc.filename
    cause = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None and path is not None and str(exc.filename) != str(path):
        cause = f"{cause} ({exc.filename})"
    return f"cannot {action} {where}: {cause}" if where is not None else f"{action} failed: {cause}"


class UnsupportedArchitectureError(ProbesError):
    """A model whose architecture TransformerBridge cannot wrap."""
