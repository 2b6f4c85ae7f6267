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


class UnsupportedArchitectureError(ProbesError):
    """A model whose architecture TransformerBridge cannot wrap."""
