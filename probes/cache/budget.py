"""What a model can take: sequence lengths against its context, a batch against free memory.

Checked before any store is created, so an input the model cannot take is one line and leaves
nothing behind. ``--max-tokens N`` with ``--truncate left|right`` is the stated way to fit long
rows; the policy is recorded in the store's request.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from probes.errors import ProbesError
from probes.validate import check_int

TRUNCATE_SIDES = ("left", "right")
_MEMORY_SHARE = 0.8  # refuse a batch that needs more than this share of available memory


def truncation_key(max_tokens: int | None, side: str) -> dict[str, Any] | None:
    """The request entry of a truncation policy (None when rows are kept whole)."""
    if max_tokens is None:
        return None
    check_int("max_tokens", max_tokens, minimum=2)
    if side not in TRUNCATE_SIDES:
        raise ProbesError(f"truncate must be 'left' or 'right', got {side!r}")
    return {"max_tokens": max_tokens, "side": side}


def truncate(
    token_ids: list[list[int]], max_tokens: int, side: str, bos: int | None
) -> list[list[int]]:
    """Cut each row to ``max_tokens`` from ``side``; a leading BOS token is always kept."""
    out = []
    for ids in token_ids:
        if len(ids) <= max_tokens:
            out.append(ids)
            continue
        head = ids[:1] if bos is not None and ids and ids[0] == bos else []
        body = ids[len(head) :]
        keep = max_tokens - len(head)
        out.append(head + (body[:keep] if side == "right" else body[len(body) - keep :]))
    return out


def check_lengths(token_ids: Sequence[Sequence[int]], context: int | None, model_name: str) -> None:
    """A one-line error naming the first row longer than the model's context."""
    if context is None:
        return
    for row, ids in enumerate(token_ids):
        if len(ids) > context:
            raise ProbesError(
                f"row {row} has {len(ids):,} tokens, more than {model_name}'s context of "
                f"{context:,}: pass --max-tokens N (at most {context}) with --truncate left or "
                "right, or shorten the rows"
            )


def available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable on Linux, else physical), if known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def batch_bytes(config: Any, d_model: int, batch: int, length: int, itemsize: int) -> int:
    """A rough upper estimate of one forward pass's working memory: the residual stream and
    MLP activations of one layer, plus one layer's attention scores if they are materialised."""
    d_mlp = int(getattr(config, "intermediate_size", 0) or getattr(config, "n_inner", 0) or 0)
    d_mlp = d_mlp or 4 * d_model
    heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0) or 1)
    hidden = batch * length * (8 * d_model + 3 * d_mlp)
    scores = 2 * batch * heads * length * length
    return (hidden + scores) * itemsize


def check_memory(
    config: Any, d_model: int, batch: int, length: int, itemsize: int, available: int | None
) -> None:
    """Refuse a batch whose estimated working memory exceeds most of the memory available."""
    if available is None:
        return
    need = batch_bytes(config, d_model, batch, length, itemsize)
    if need > _MEMORY_SHARE * available:
        raise ProbesError(
            f"a batch of {batch} rows of {length:,} tokens needs about {need / 2**30:,.1f} GiB, "
            f"more than the {available / 2**30:,.1f} GiB available: lower --batch-size or "
            "pass --max-tokens"
        )
