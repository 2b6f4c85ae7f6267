"""Devices: default dtypes, batch sizes from free memory, shrinking on out-of-memory, and the
facts of a model dispatched over several devices (or partly offloaded to disk) by accelerate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from probes.errors import ProbesError

T = TypeVar("T")

DEFAULT_CPU_BATCH = 16
# Bytes of activation memory per token and per unit of d_model that an extraction forward keeps
# alive at its peak (residual, attention and MLP intermediates, and SDPA's workspace), measured
# loosely; the estimate only has to be safe, the out-of-memory shrink catches the rest.
_BYTES_PER_TOKEN_PER_DIM = 48


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on a CUDA device that supports it, float32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def default_store_dtype(model_dtype: torch.dtype) -> str:
    """Stores keep a half-precision model's own dtype (half the bytes of float32)."""
    if model_dtype == torch.bfloat16:
        return "bfloat16"
    if model_dtype == torch.float16:
        return "float16"
    return "float32"


def free_memory_batch_size(
    device: torch.device,
    d_model: int,
    tokens_per_row: int,
    free_bytes: int | None = None,
    cap: int = 256,
) -> int:
    """Rows per batch that fit in half the device's free memory (CPU: a fixed default)."""
    if free_bytes is None:
        if device.type != "cuda" or not torch.cuda.is_available():
            return DEFAULT_CPU_BATCH
        free_bytes, _ = torch.cuda.mem_get_info(device)
    per_row = max(1, tokens_per_row) * d_model * _BYTES_PER_TOKEN_PER_DIM
    return int(max(1, min(cap, (free_bytes // 2) // per_row)))


def is_out_of_memory(exc: BaseException) -> bool:
    """A device out-of-memory error (CUDA's, or a backend's RuntimeError that says so)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def shrinking_batches(
    order: Sequence[T],
    batch_size: int,
    run: Callable[[list[T]], None],
    on_shrink: Callable[[int], None] | None = None,
) -> int:
    """Call ``run`` on consecutive batches of ``order``; on out-of-memory, free the cache, halve
    the batch size and retry the same rows, keeping the smaller size from then on.

    Returns the batch size that was in use at the end. A single row that does not fit is a
    one-line :class:`ProbesError`.
    """
    size, start = max(1, int(batch_size)), 0
    while start < len(order):
        chunk = list(order[start : start + size])
        try:
            run(chunk)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if size == 1:
                raise ProbesError(
                    "out of memory with a batch of one prompt: use a shorter prompt, a smaller "
                    "dtype or more devices (device_map)"
                ) from exc
            size = max(1, size // 2)
            if on_shrink is not None:
                on_shrink(size)
            continue
        start += len(chunk)
    return size


def is_dispatched(hf_model: Any) -> bool:
    """True when accelerate placed the model's modules itself (a ``device_map`` load)."""
    return bool(getattr(hf_model, "hf_device_map", None))


def input_device(hf_model: Any) -> torch.device:
    """Where input ids must go: the input embedding's device (CPU when it is offloaded)."""
    weight = hf_model.get_input_embeddings().weight
    return torch.device("cpu") if weight.device.type == "meta" else weight.device


def state_items(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``state_dict()`` items with offloaded (meta) tensors read back from accelerate's weight
    map, one tensor at a time, so a partly offloaded model can still be fingerprinted."""
    for name, tensor in model.state_dict().items():
        if tensor.device.type == "meta":
            owner, _, leaf = name.rpartition(".")
            hook = getattr(model.get_submodule(owner), "_hf_hook", None)
            weights = getattr(hook, "weights_map", None)
            if weights is None:
                raise ProbesError(f"weight {name} is on the meta device and has no offload copy")
            tensor = weights[leaf]
        yield name, tensor
