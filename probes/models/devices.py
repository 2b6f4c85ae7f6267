"""Devices: default dtypes, batch sizes from free memory, shrinking on out-of-memory, and the
facts of a model dispatched over several devices (or partly offloaded to disk) by accelerate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
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


def native_bf16_cpu() -> bool:
    """Does this CPU multiply bfloat16 in hardware (AVX512-BF16 or AMX)? Elsewhere torch
    emulates it, several times slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def quick_dtype(device: torch.device) -> str | None:
    """``--quick``'s model dtype: bfloat16 on a CPU that multiplies it natively (1.43x
    faster than float32 on a whole quick run here, the same findings), else None (the
    device's default: bfloat16 on CUDA already, float32 on other CPUs)."""
    return "bfloat16" if device.type == "cpu" and native_bf16_cpu() else None


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


def dispatch_kwargs(
    device: str | torch.device | None,
    device_map: str | dict[str, Any] | None,
    n_devices: int | None,
    max_memory: dict[Any, Any] | None,
    offload_folder: str | Path | None,
) -> dict[str, Any] | None:
    """``from_pretrained`` keywords for a dispatched load, or None for a one-device load."""
    if device_map is None and (n_devices is None or n_devices <= 1) and max_memory is None:
        return None
    if device is not None:
        raise ProbesError("pass either device or device_map/n_devices/max_memory, not both")
    if device_map is None and n_devices is not None and n_devices > 1:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available < n_devices:
            raise ProbesError(f"n_devices={n_devices} needs that many GPUs; {available} visible")
        from transformer_lens.utilities.multi_gpu import resolve_device_map

        device_map, max_memory = resolve_device_map(n_devices, None, None, max_memory)
    out: dict[str, Any] = {"device_map": device_map or "auto"}
    if max_memory is not None:
        out["max_memory"] = max_memory
    if offload_folder is not None:
        out["offload_folder"] = str(offload_folder)
    return out


def first_cuda(dispatch: dict[str, Any] | None) -> torch.device | None:
    """The first GPU a dispatched load uses (its default dtype is then bfloat16), if any."""
    if dispatch is None or not torch.cuda.is_available():
        return None
    device_map = dispatch["device_map"]
    if isinstance(device_map, dict) and not any(
        isinstance(v, int) or str(v).startswith("cuda") for v in device_map.values()
    ):
        return None
    return torch.device("cuda", 0)
