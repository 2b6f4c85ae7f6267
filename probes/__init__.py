"""probes: what a language model silently infers about its user, where, and what it changes."""

from __future__ import annotations

__version__ = "0.1.0"

from probes.errors import CacheError, ConfigError, DatasetError, ModelNotFoundError, ProbesError

__all__ = [
    "CacheError",
    "ConfigError",
    "DatasetError",
    "ModelNotFoundError",
    "ProbesError",
    "__version__",
]
