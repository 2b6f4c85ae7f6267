"""Where the suite meets the internals of transformers and TransformerLens, across versions.

transformers 5.24 renamed the KV-cache keyword of every model, decoder layer and attention
module from ``past_key_values`` to ``cache`` (the old name is still accepted and renamed by a
deprecation shim until 5.40). TransformerLens 4.3's re-implemented attention reads only
``past_key_values`` (or ``layer_past``) from the keywords it is handed, so under 5.24 it never
extends the cache: every decode step attends to itself alone and greedy text is garbage while
uncached scoring stays right. This module is the one place that knows both names:

- :func:`kv_cache_from` reads the cache out of a forward's keyword arguments, whatever its name;
- :func:`route_kv_cache` makes each of a bridge's attention components find the cache under the
  name it reads;
- :func:`check_supported` refuses a combination of versions known to give wrong text.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from probes.errors import ProbesError

KV_CACHE_KEYWORDS: tuple[str, ...] = ("cache", "past_key_values", "layer_past")
"""Every name a KV cache has been passed under, newest first."""

# Versions at or past which the suite's own code is known not to work, by package (exclusive).
# pyproject.toml's upper bounds say the same; this refuses an install that ignored them.
KNOWN_BROKEN_FROM: dict[str, str] = {}


def kv_cache_from(kwargs: dict[str, Any]) -> Any:
    """The KV cache a forward was handed (``None`` when it runs uncached)."""
    for name in KV_CACHE_KEYWORDS:
        cache = kwargs.get(name)
        if cache is not None:
            return cache
    return None


def cached_length(kwargs: dict[str, Any]) -> int:
    """How many positions the forward's KV cache already holds (0 when uncached)."""
    cache = kv_cache_from(kwargs)
    if cache is None or not hasattr(cache, "get_seq_length"):
        return 0
    return int(cache.get_seq_length())


def _routed_update(original: Any, k: Any, v: Any, **kwargs: Any) -> Any:
    if kwargs.get("past_key_values") is None and kwargs.get("layer_past") is None:
        cache = kwargs.get("cache")
        if cache is not None:
            kwargs["past_key_values"] = cache
    return original(k, v, **kwargs)


def route_kv_cache(bridge: Any) -> int:
    """Let every attention component of ``bridge`` find the KV cache under the new name too.

    TransformerLens' components extend the cache in ``_update_kv_cache(k, v, **kwargs)``; each
    instance gets a wrapper that hands it ``cache`` as ``past_key_values`` when only the new
    name was passed. Idempotent; returns how many components were wrapped.
    """
    wrapped = 0
    for module in bridge.modules():
        method = getattr(module, "_update_kv_cache", None)
        if method is None or getattr(method, "_probes_routed", False):
            continue
        routed = functools.partial(_routed_update, method)
        routed._probes_routed = True  # type: ignore[attr-defined]
        # An instance attribute shadows the class method for this component only.
        object.__setattr__(module, "_update_kv_cache", routed)
        wrapped += 1
    return wrapped


def _parse(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def installed_version(package: str) -> str | None:
    """The installed distribution's version string, or ``None``."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def check_supported(broken_from: dict[str, str] | None = None) -> None:
    """Refuse, in one line, an installed version the suite is known to mis-handle."""
    for package, bad in (KNOWN_BROKEN_FROM if broken_from is None else broken_from).items():
        found = installed_version(package)
        if found is not None and _parse(found) >= _parse(bad):
            raise ProbesError(
                f"{package} {found} is not supported by this version of probes (it is known to "
                f"give wrong results from {bad} on): install the locked versions with "
                "`pip install -c constraints.txt -e .`"
            )


def cache_keyword(module: Any) -> str:
    """The keyword ``module.forward`` takes its KV cache under (``cache`` from transformers 5.24,
    ``past_key_values`` before), so callers never trigger the deprecation shim."""
    import inspect

    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"
