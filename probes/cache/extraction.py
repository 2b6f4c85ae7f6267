"""Activation extraction into a resumable, content-addressed ActivationStore.

The hot path of the suite. Hooks copy only the selected position of each prompt (never the whole
[batch, pos, d_model] activation), the forward pass stops right after the last requested hook
(no later blocks, no final norm, no LM head), and prompts are sorted by length within each shard
so batches carry little padding.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from probes.cache import budget
from probes.cache.budget import truncation_key
from probes.cache.integrity import TABLE, parse_table, table_bytes
from probes.cache.positions import PositionSpec, gather_positions, parse_position, selection_weights
from probes.cache.store import (
    MANIFEST,
    SITE_HOOKS,
    SITE_ORDER,
    ActivationStore,
    StoreWriter,
    describe_difference,
    iter_shards,
    request_key,
    tensor_name,
)
from probes.errors import CacheError, ProbesError
from probes.models.attention import fast_attention
from probes.models.batching import collate, encode, pad_token_id
from probes.models.devices import default_store_dtype, free_memory_batch_size, shrinking_batches
from probes.models.layers import parse_layers
from probes.models.loading import LoadedModel, probes_home, resolve_dtype
from probes.validate import check_int, check_text

STORE_DTYPES = ("float32", "float16", "bfloat16")


def _warn_shrink(size: int) -> None:
    print(f"[probes] out of memory: batch size now {size}", file=sys.stderr, flush=True)


class _StopForward(Exception):
    """Raised by the last capture hook: nothing after it is needed."""


def default_cache_root() -> Path:
    return probes_home() / "activations"


def prompts_hash(prompts: Sequence[str], metadata: Sequence[dict[str, Any]] | None) -> str:
    """Content hash of the prompts and their metadata (the default dataset hash)."""
    digest = hashlib.sha256()
    for i, prompt in enumerate(prompts):
        digest.update(prompt.encode())
        digest.update(b"\x00")
        if metadata is not None:
            digest.update(json.dumps(metadata[i], sort_keys=True, default=str).encode())
        digest.update(b"\x01")
    return digest.hexdigest()


def parse_sites(sites: Sequence[str] | str) -> list[str]:
    names = [s.strip() for s in sites.split(",")] if isinstance(sites, str) else list(sites)
    unknown = [s for s in names if s not in SITE_HOOKS]
    if unknown or not names:
        raise ProbesError(f"unknown site {unknown or names}: use {', '.join(SITE_HOOKS)}")
    return sorted(set(names), key=lambda s: SITE_ORDER[s])


def extract(
    model: LoadedModel,
    prompts: Sequence[str],
    *,
    position: str | PositionSpec = "last",
    suffix: str | None = None,
    **kwargs: Any,
) -> ActivationStore:
    """Run ``model`` on rendered ``prompts`` and store activations at the chosen positions.

    Returns the finished store. The same request (model fingerprint, prompts and metadata,
    rendering, sites, layers, position, dtype, truncation) is a cache hit that does no model
    work; a partially written store from a killed run is resumed from its last whole shard.
    Rows longer than the model's context are refused unless ``max_tokens`` cuts them (from the
    ``truncate`` side, keeping BOS); a batch too big for the memory available is refused.

    ``dtype=None`` stores in the model's dtype when it is half precision (bfloat16 on CUDA by
    default), else float32. ``batch_size="auto"`` sizes batches from the device's free memory;
    any batch that runs out of memory is halved and retried, never a crash. ``workers > 1`` (or
    a ``ray_address``) extracts the missing shards on a Ray actor pool, one model replica per
    worker, into the same store with the same bytes (``probes.cache.parallel``).
    Other keywords are those of :func:`extract_positions`.
    """
    return extract_positions(model, prompts, [parse_position(position, suffix)], **kwargs)[0]


def extract_positions(
    model: LoadedModel,
    prompts: Sequence[str],
    positions: Sequence[str | PositionSpec],
    *,
    layers: Sequence[int] | str | None = None,
    sites: Sequence[str] | str = ("resid_post",),
    suffix: str | None = None,
    dtype: str | None = None,
    batch_size: int | str = 16,
    metadata: Sequence[dict[str, Any]] | None = None,
    rendering: str | dict[str, Any] = "raw",
    dataset_hash: str | None = None,
    cache_root: str | Path | None = None,
    shard_size: int = 256,
    padding_side: str = "right",
    progress: bool = True,
    max_tokens: int | None = None,
    truncate: str = "right",
    workers: int = 1,
    ray_address: str | None = None,
) -> list[ActivationStore]:
    """One store per read-out position, all from one forward pass over ``prompts``.

    Each store is the same content-addressed store, with the same bytes, as :func:`extract` at
    that position alone: stores already cached are returned as they are, and only the missing
    ones (or their missing shards) cost model work, shared between them. The positions must
    read the same token sequences ("last", "mean" and "index" do; each read-out suffix makes
    its own sequences, so a suffix position goes with no other).
    """
    prompts = list(prompts)
    if not prompts:
        raise ProbesError("no prompts to extract activations for")
    if not all(isinstance(p, str) for p in prompts):
        raise ProbesError("prompts must be rendered strings (see probes.datasets.render)")
    for i, prompt in enumerate(prompts):
        check_text(prompt, f"prompt {i}")
    if metadata is not None and len(metadata) != len(prompts):
        raise ProbesError(f"{len(metadata)} metadata rows for {len(prompts)} prompts")
    dtype = dtype if dtype is not None else default_store_dtype(model.dtype)
    if dtype not in STORE_DTYPES:
        raise ProbesError(f"store dtype must be one of {', '.join(STORE_DTYPES)}, got {dtype!r}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ProbesError(f"workers must be a positive integer, got {workers!r}")
    if batch_size != "auto":
        check_int("batch_size", batch_size)
    check_int("shard_size", shard_size)
    if padding_side not in ("left", "right"):
        raise ProbesError("padding_side must be 'left' or 'right'")
    specs = [parse_position(p, suffix) for p in positions]
    if not specs:
        raise ProbesError("name at least one position to extract")
    if len({json.dumps(s.key(), sort_keys=True) for s in specs}) < len(specs):
        raise ProbesError(f"positions repeat: {[s.kind for s in specs]}")
    if len(specs) > 1 and any(s.kind == "suffix" for s in specs):
        raise ProbesError("a suffix position reads its own token sequences: extract it alone")
    for spec in specs:
        if spec.kind == "index" and len(spec.indices or ()) != len(prompts):
            raise ProbesError("position 'index' needs exactly one index per prompt")
    spec = specs[0]  # every spec reads the same token sequences
    truncation = truncation_key(max_tokens, truncate)
    context = model.context_length
    if truncation is not None:
        if context is not None and truncation["max_tokens"] > context:
            raise ProbesError(
                f"max_tokens {max_tokens} is more than {model.name}'s context of {context}"
            )
        for cut in specs:
            if cut.kind == "index" or (cut.kind == "suffix" and truncate == "right"):
                raise ProbesError(
                    f"truncating from the {truncate} would cut the positions read by "
                    f"position {cut.kind!r}: use truncate='left' (--truncate left)"
                )
    layer_list = parse_layers(layers, model.n_layers)
    site_list = parse_sites(sites)

    base = {
        "model": {"name": model.name, "fingerprint": model.fingerprint},
        "dataset_hash": dataset_hash or prompts_hash(prompts, metadata),
        "rendering": rendering,
        "sites": site_list,
        "layers": layer_list,
    }
    tail = {"dtype": dtype, "n_rows": len(prompts), "d_model": model.d_model}
    requests = [{**base, "position": s.key(), **tail, "shard_size": shard_size} for s in specs]
    if truncation is not None:  # only then, so stores made without it keep their keys
        for request in requests:
            request["truncation"] = truncation
    root = Path(cache_root or default_cache_root())
    folders = [root / request_key(request) for request in requests]
    table = [
        {"row": i, "text": prompts[i], **(metadata[i] if metadata is not None else {})}
        for i in range(len(prompts))
    ]
    stores: list[ActivationStore | None] = [
        _cache_hit(folder, request, table) if (folder / MANIFEST).is_file() else None
        for folder, request in zip(folders, requests, strict=True)
    ]
    missing = [i for i, store in enumerate(stores) if store is None]
    if not missing:
        return [store for store in stores if store is not None]

    texts = spec.apply_to_texts(prompts)
    token_ids = encode(model.tokenizer, texts)
    if truncation is not None:
        token_ids = budget.truncate(
            token_ids, truncation["max_tokens"], truncate, model.tokenizer.bos_token_id
        )
    budget.check_lengths(token_ids, context, model.name)
    if batch_size == "auto":
        longest = max(len(ids) for ids in token_ids)
        batch_size = free_memory_batch_size(model.device, model.d_model, longest)
    budget.check_memory(
        model.hf_model.config,
        model.d_model,
        min(int(batch_size), shard_size, len(prompts)),
        max(len(ids) for ids in token_ids),
        torch.empty((), dtype=model.dtype).element_size(),
        budget.available_memory(),
    )
    writers = {i: StoreWriter(folders[i], requests[i], table) for i in missing}
    needed = {
        index: [i for i in missing if not writers[i].done(index)]
        for index, _, _ in iter_shards(len(prompts), shard_size)
    }
    total_tokens = sum(len(ids) for ids in token_ids)
    done_tokens = sum(
        len(token_ids[r])
        for index, start, end in iter_shards(len(prompts), shard_size)
        if not needed[index]
        for r in range(start, end)
    )
    wanted = [specs[i] for i in missing]
    capture = _Capture(model, site_list, layer_list, resolve_dtype(dtype), wanted, padding_side)

    def write(index: int, start: int, end: int, tensors: list[dict[str, torch.Tensor]]) -> None:
        for i, shard in zip(missing, tensors, strict=True):
            if i in needed[index]:
                writers[i].write_shard(index, (start, end), shard)

    with tqdm(
        total=total_tokens,
        initial=done_tokens,
        unit="tok",
        unit_scale=True,
        desc=f"extract {model.name}",
        disable=not progress,
    ) as bar:
        pending = [s for s in iter_shards(len(prompts), shard_size) if needed[s[0]]]
        if workers > 1 or ray_address:
            from probes.cache.parallel import run_shards_on_ray

            setup = (site_list, layer_list, dtype, wanted, padding_side)
            for index, (start, end), tensors in run_shards_on_ray(
                model, pending, token_ids, setup, int(batch_size), workers, ray_address
            ):
                write(index, start, end, tensors)
                bar.update(sum(len(token_ids[r]) for r in range(start, end)))
            pending = []
        for index, start, end in pending:
            rows = list(range(start, end))
            tensors = capture.run(rows, token_ids, int(batch_size), on_batch=bar.update)
            batch_size = capture.batch_size  # smaller from now on if a batch ran out of memory
            write(index, start, end, tensors)
    for i in missing:
        stores[i] = writers[i].finish()
    return [store for store in stores if store is not None]


def _cache_hit(
    folder: Path, request: dict[str, Any], table: list[dict[str, Any]]
) -> ActivationStore:
    """The finished store for ``request``, checked against it and against the rows it holds."""
    store = ActivationStore.open(folder)
    if store.request != request:
        raise CacheError(
            f"store {folder} holds another request ({describe_difference(store.request, request)})"
            ": delete it to extract again"
        )
    expected = parse_table(table_bytes(table), folder / TABLE)
    for row, (have, want) in enumerate(zip(store.table, expected, strict=True)):
        if have != want:
            raise CacheError(
                f"{TABLE} of store {folder} differs from this request's rows at row {row} "
                f"({describe_difference(have, want)}): delete the store to extract again"
            )
    return store


class _Capture:
    """Hooks that copy the selected positions into per-shard buffers and stop the forward."""

    def __init__(
        self,
        model: LoadedModel,
        sites: list[str],
        layers: list[int],
        store_dtype: torch.dtype,
        specs: Sequence[PositionSpec],
        padding_side: str,
    ):
        self.model = model
        self.specs = list(specs)  # every spec reads the same token sequences
        self.padding_side = padding_side
        self.store_dtype = store_dtype
        self.targets = [(site, layer) for layer in layers for site in sites]
        self.last = max(self.targets, key=lambda t: (t[1], SITE_ORDER[t[0]]))
        self.buffers: list[dict[str, torch.Tensor]] = []
        self.selections: list[torch.Tensor] = []
        self.slots: torch.Tensor | None = None
        self.batch_size = 0

    def _hook(self, site: str, layer: int) -> Callable[..., None]:
        name = tensor_name(site, layer)
        is_last = (site, layer) == self.last

        def hook(acts: torch.Tensor, hook: Any) -> None:
            assert self.slots is not None
            for selection, buffers in zip(self.selections, self.buffers, strict=True):
                picked = gather_positions(acts, selection)
                buffers[name][self.slots] = picked.to("cpu", self.store_dtype)
            if is_last:
                raise _StopForward

        return hook

    @torch.inference_mode()
    def run(
        self,
        rows: list[int],
        token_ids: Sequence[list[int]] | Mapping[int, list[int]],
        batch_size: int,
        on_batch: Callable[[int], Any],
    ) -> list[dict[str, torch.Tensor]]:
        """One shard's tensors per spec (``{tensor name: [rows, d_model]}``)."""
        model = self.model
        self.buffers = [
            {
                tensor_name(site, layer): torch.empty(
                    len(rows), model.d_model, dtype=self.store_dtype
                )
                for site, layer in self.targets
            }
            for _ in self.specs
        ]
        hooks = [
            (SITE_HOOKS[site].format(layer=layer), self._hook(site, layer))
            for site, layer in self.targets
        ]
        bos = model.tokenizer.bos_token_id
        pad = pad_token_id(model.tokenizer)
        # longest first within the shard, so batches hold prompts of similar length
        order = sorted(range(len(rows)), key=lambda k: (-len(token_ids[rows[k]]), k))
        body = model.hf_model.base_model

        def run_batch(slots: list[int]) -> None:
            seqs = [token_ids[rows[k]] for k in slots]
            batch = collate(seqs, pad, self.padding_side, model.device)  # type: ignore[arg-type]
            skip_first = torch.as_tensor(
                [int(bos is not None and len(s) > 0 and s[0] == bos) for s in seqs],
                device=model.device,
            )
            batch_rows = [rows[k] for k in slots]
            self.selections = [
                selection_weights(spec, batch.attention_mask, skip_first, rows=batch_rows)
                for spec in self.specs
            ]
            self.slots = torch.as_tensor(slots)
            with suppress(_StopForward):
                body(**batch.model_kwargs(), use_cache=False)
            on_batch(sum(len(s) for s in seqs))

        with model.bridge.hooks(fwd_hooks=hooks), fast_attention(model.hf_model):
            self.batch_size = shrinking_batches(order, batch_size, run_batch, _warn_shrink)
        out, self.buffers = self.buffers, []
        return out


def _dataset_request(model: LoadedModel, dataset: Any, render_spec: Any) -> dict[str, Any]:
    """The rendered prompts, metadata rows, rendering key and content hash of a dataset."""
    from probes.datasets import RenderSpec, render
    from probes.datasets.render import RENDER_VERSION

    spec = render_spec or RenderSpec()
    metadata = [
        {
            "id": ex.id,
            "attribute": ex.attribute,
            "label": ex.label,
            "group": ex.group,
            "pair_id": ex.pair_id,
            "user_text": ex.user_text,
        }
        for ex in dataset.examples
    ]
    rendering = {
        "frame": spec.frame,
        "suffix": spec.suffix,
        "labels": list(dataset.labels),
        "version": RENDER_VERSION,
    }
    return {
        "prompts": render(dataset, spec, tokenizer=model.tokenizer),
        "metadata": metadata,
        "rendering": rendering,
        "dataset_hash": dataset.content_hash(),
    }


def extract_dataset(
    model: LoadedModel,
    dataset: Any,
    *,
    render_spec: Any = None,
    **kwargs: Any,
) -> ActivationStore:
    """Render a ``probes.datasets.Dataset`` and extract it; labels, groups and ids go in the table.

    The rendering (frame, suffix) and the dataset's content hash are part of the cache key.
    """
    return extract(model, **_dataset_request(model, dataset, render_spec), **kwargs)


def extract_dataset_positions(
    model: LoadedModel,
    dataset: Any,
    positions: Sequence[str | PositionSpec],
    *,
    render_spec: Any = None,
    **kwargs: Any,
) -> list[ActivationStore]:
    """:func:`extract_dataset` at several positions in one forward pass (one store each)."""
    request = _dataset_request(model, dataset, render_spec)
    return extract_positions(model, positions=positions, **request, **kwargs)
