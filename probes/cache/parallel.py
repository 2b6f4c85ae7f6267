"""Data-parallel extraction on Ray: one model replica per worker, disjoint shards, one store.

The driver keeps the store: it decides which shards are missing, sends each shard's rows and
token ids to a pool of Ray actors, and writes every shard that comes back through the same
``StoreWriter`` as a single process. A shard's rows are length-sorted within the shard and
batched the same way wherever it runs, so the store's bytes do not depend on the number of
workers. An actor that dies is restarted and its shard is sent again. Ray is imported only here,
and only when more than one worker (or a cluster address) is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from probes.errors import ProbesError

# Test hook: a path P. While P.armed exists and P does not, the worker that takes shard 1
# creates P and dies (os._exit): a worker killed mid-shard, once.
KILL_ONCE_ENV = "PROBES_RAY_KILL_ONCE"


class ShardWorker:
    """One model replica that extracts whole shards (run as a Ray actor)."""

    def __init__(
        self, spec: str, device: str, dtype: str, fingerprint: str, capture: tuple[Any, ...]
    ) -> None:
        from probes.cache.extraction import _Capture
        from probes.models.loading import load_model, resolve_dtype

        self.model = load_model(spec, device=device, dtype=dtype)
        if self.model.fingerprint != fingerprint:
            raise ProbesError(
                f"worker loaded {spec} with fingerprint {self.model.fingerprint}, "
                f"not the driver's {fingerprint}: every machine needs the same weights"
            )
        sites, layers, store_dtype, positions, padding_side = capture
        self.capture = _Capture(
            self.model, sites, layers, resolve_dtype(store_dtype), positions, padding_side
        )

    def shard(
        self, index: int, rows: list[int], ids: list[list[int]], batch_size: int
    ) -> tuple[int, list[dict[str, torch.Tensor]]]:
        marker = os.environ.get(KILL_ONCE_ENV)
        if marker and index == 1 and Path(f"{marker}.armed").exists() and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)  # a worker killed mid-shard
        by_row = dict(zip(rows, ids, strict=True))
        tensors = self.capture.run(rows, by_row, batch_size, on_batch=lambda _n: None)
        return index, tensors


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ProbesError(
            "--workers needs Ray: pip install -e '.[ray]' (the single-process path does not)"
        ) from exc
    return ray


def run_shards_on_ray(
    model: Any,
    shards: Sequence[tuple[int, int, int]],
    token_ids: Sequence[list[int]],
    capture: tuple[Any, ...],
    batch_size: int,
    workers: int,
    ray_address: str | None = None,
) -> Iterator[tuple[int, tuple[int, int], list[dict[str, torch.Tensor]]]]:
    """Yield ``(index, (start, end), tensors per position)`` for every shard, in completion
    order."""
    ray = _ray()
    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    on_gpu = model.device.type == "cuda"
    actor_class = ray.remote(
        num_cpus=0 if on_gpu else 1, num_gpus=1 if on_gpu else 0, max_restarts=3, max_task_retries=3
    )(ShardWorker)
    device = "cuda" if on_gpu else "cpu"
    dtype = str(model.dtype).removeprefix("torch.")
    actors = [
        actor_class.remote(model.spec, device, dtype, model.fingerprint, capture)
        for _ in range(min(workers, max(1, len(shards))))
    ]
    rows_of = {index: (start, end) for index, start, end in shards}
    pool = ray.util.ActorPool(actors)
    tasks = [
        (index, list(range(start, end)), [token_ids[r] for r in range(start, end)])
        for index, start, end in shards
    ]
    try:
        for index, tensors in pool.map_unordered(
            lambda actor, task: actor.shard.remote(*task, batch_size), tasks
        ):
            yield index, rows_of[index], tensors
    finally:
        for actor in actors:
            ray.kill(actor)
