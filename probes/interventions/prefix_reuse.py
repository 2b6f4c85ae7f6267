"""Skip the layers an intervention cannot change.

An intervention at layer L leaves layers 0..L-1 exactly as they were, so a sweep that scores
the same prompts under many interventions recomputes the same early layers every time. Inside
:func:`resume_from`, a forward pass keeps the residual entering each listed layer (where no
hook has touched it yet); a later pass on the same batch (same token ids, mask and positions)
runs the blocks before the latest kept layer that precedes its first hooked block as
pass-throughs and hands that block the kept residual. The numbers are the same: every block
that runs sees the same input as in a whole pass.

Which blocks may be skipped is read from the hooks attached at the time of each pass (on the
bridge's hook points and on the blocks themselves), so a hook on an early block (a recording, an
intervention) simply makes that pass start earlier. A hook put directly on a Hugging Face
submodule inside a block is not seen: do not use one inside the block. Passes with a KV cache
(generation) always run whole.

A bridge hook wrapped in :func:`observer` only reads (its return value is dropped). It still
makes a resumed pass start at or before its block, so that it fires, but it does not stop a
whole pass from keeping the residuals after it: a pass that records every layer can feed later
intervened passes (the persona audit's base pass and its mitigated pass).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from probes.errors import ProbesError
from probes.models.compat import kv_cache_from
from probes.models.loading import LoadedModel

MAX_KEPT_BYTES = 2 * 1024**3  # beyond this, nothing more is kept (later batches run whole)
_OBSERVER = "_probes_observes_only"


class _PassThrough(nn.Module):
    """Stands in for a skipped decoder block: returns its input residual."""

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return hidden_states


@dataclass
class ResumeStats:
    """What a :func:`resume_from` block did: passes run whole or resumed, blocks skipped."""

    layers: tuple[int, ...]
    whole: int = 0
    resumed: int = 0
    blocks_skipped: int = 0
    kept_bytes: int = 0
    enabled: bool = True
    kept: dict[tuple[str, int], Tensor] = field(default_factory=dict, repr=False)


def _batch_key(args: tuple, kwargs: dict[str, Any]) -> str | None:
    ids = kwargs.get("input_ids", args[0] if args else None)
    if not isinstance(ids, Tensor):
        return None
    digest = hashlib.blake2b(digest_size=16)
    for name in ("input_ids", "attention_mask", "position_ids"):
        value = ids if name == "input_ids" else kwargs.get(name)
        if isinstance(value, Tensor):
            digest.update(name.encode() + str(tuple(value.shape)).encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _block_list(body: nn.Module, first_block: nn.Module) -> nn.ModuleList | None:
    """The body's list of decoder blocks (``layers`` in Llama/Gemma, ``h`` in GPT-2)."""
    for name in ("layers", "h", "blocks"):
        candidate = getattr(body, name, None)
        if isinstance(candidate, nn.ModuleList) and len(candidate) and candidate[0] is first_block:
            return candidate
    return None


def observer(fn: Callable[[Tensor, Any], Any]) -> Callable[[Tensor, Any], None]:
    """A bridge hook function that only reads: whatever ``fn`` returns is dropped, and
    :func:`resume_from` lets a pass keep the residuals after it (see the module docstring)."""

    def observe(acts: Tensor, hook: Any) -> None:
        fn(acts, hook)

    setattr(observe, _OBSERVER, True)
    return observe


def _has_hooks(
    module: nn.Module, own: frozenset[int] | set[int], skip_observers: bool = False
) -> bool:
    lens = list(getattr(module, "fwd_hooks", None) or [])
    if skip_observers:  # a hook point's observers (their torch handles) do not count
        watching = {h.hook.id for h in lens if getattr(h.user_hook, _OBSERVER, False)}
        own = {*own, *watching}
        lens = [h for h in lens if h.hook.id not in watching]
    hooks = [*module._forward_hooks, *module._forward_pre_hooks]
    return any(h not in own for h in hooks) or bool(lens)


def first_hooked_block(
    model: LoadedModel, own: frozenset[int] | set[int] = frozenset(), skip_observers: bool = False
) -> int:
    """Index of the first block with a hook on it or inside it (0 for the embedding,
    ``n_layers`` if none): the blocks before it compute what a hook-free pass computes.
    ``skip_observers``: leave out hooks made with :func:`observer` (they change nothing)."""
    first = model.n_layers
    for name, point in model.bridge.hook_dict.items():
        if not _has_hooks(point, own, skip_observers):
            continue
        if not name.startswith("blocks."):
            if name.startswith(("embed", "hook_embed", "pos_embed")):
                return 0
            continue
        first = min(first, int(name.split(".")[1]))
    for index, block in enumerate(model.bridge.blocks[:first]):
        if _has_hooks(block, own, skip_observers):
            return index
    return first


@contextmanager
def resume_from(model: LoadedModel, layers: int | Sequence[int]) -> Iterator[ResumeStats]:
    """Within the block, repeated passes on the same batch start at the latest of ``layers``
    that no hook precedes. Wrap a loop of interventions that re-score the same prompts."""
    wanted = [layers] if isinstance(layers, int) else list(layers)
    bad = [x for x in wanted if not 0 <= x < model.n_layers]
    if bad:
        raise ProbesError(f"resume_from: layer {bad[0]} is outside 0..{model.n_layers - 1}")
    keep_at = sorted({int(x) for x in wanted} - {0})
    stats = ResumeStats(layers=tuple(keep_at), enabled=bool(keep_at))
    body = model.hf_model.base_model
    blocks = _block_list(body, model.bridge.blocks[0])
    if not stats.enabled or blocks is None:  # nothing to skip, or a body we cannot edit
        stats.enabled = False
        yield stats
        return
    originals = list(blocks)
    passthrough = _PassThrough()
    state: dict[str, Any] = {"key": None, "start": 0, "clean_until": 0, "plain": None}
    own: set[int] = set()

    def restore() -> None:
        if state["start"]:
            for i in range(state["start"]):
                blocks[i] = originals[i]
            state["start"] = 0

    def before_body(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        restore()
        key = None
        if kv_cache_from(kwargs) is None and kwargs.get("inputs_embeds") is None:
            key = _batch_key(args, kwargs)
        state["key"] = key
        if key is None:
            stats.whole += 1
            return
        # residuals up to the first hook that may change them are kept; a resumed pass starts
        # no later than the first hook of any kind, so that every hook still fires
        state["clean_until"] = first_hooked_block(model, own, skip_observers=True)
        first_hook = first_hooked_block(model, own)
        ready = [x for x in keep_at if x <= first_hook and (key, x) in stats.kept]
        if ready and state["plain"]:
            start = ready[-1]
            for i in range(start):
                blocks[i] = passthrough
            state["start"] = start
            stats.resumed += 1
            stats.blocks_skipped += start
        else:
            stats.whole += 1

    def make_before_block(layer: int) -> Any:
        def before_block(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Any:
            key = state["key"]
            if key is None or layer > state["clean_until"]:
                return None
            if state["start"] == layer:  # resumed pass: hand the block the kept residual
                kept = stats.kept[(key, layer)]
                if args:
                    return (kept, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": kept}
            if (key, layer) not in stats.kept and stats.kept_bytes < MAX_KEPT_BYTES:
                hidden = args[0] if args else kwargs["hidden_states"]
                stats.kept[(key, layer)] = hidden.detach().clone()
                stats.kept_bytes += hidden.numel() * hidden.element_size()
            return None

        return before_block

    def after_first_block(module: nn.Module, args: tuple, output: Any) -> None:
        if state["plain"] is None:  # a pass-through returns a tensor: only then may it stand in
            state["plain"] = isinstance(output, Tensor)
            stats.enabled = bool(state["plain"])

    def after_body(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        restore()

    handles = [
        body.register_forward_pre_hook(before_body, with_kwargs=True, prepend=True),
        originals[0].register_forward_hook(after_first_block),
        body.register_forward_hook(after_body, with_kwargs=True),
    ]
    for layer in keep_at:
        handles.append(
            originals[layer].register_forward_pre_hook(
                make_before_block(layer), with_kwargs=True, prepend=True
            )
        )
    own.update(h.id for h in handles)
    try:
        yield stats
    finally:
        restore()
        for handle in handles:
            handle.remove()
        stats.kept.clear()
