"""Interventions on the residual stream: context managers over the TransformerBridge's hooks.

``steer`` adds a direction, ``ablate`` projects directions out, ``erase`` applies a LEACE
eraser and ``patch`` writes activations recorded from another prompt's run. Each one

- names a **scope**: ``"prompt"`` (the tokens of the first, uncached forward step),
  ``"generation"`` (tokens processed with a non-empty KV cache, i.e. generated ones) or
  ``"all"``;
- optionally names **positions** in prompt coordinates: ``0`` is the first real token (BOS),
  negative indices count from the end of the prompt (``-1`` = its last token), whatever the
  padding side;
- removes its hooks when the block ends, also on an exception, and composes with the others:
  hooks run in the order the blocks were entered.

Where each token sits is read by a forward pre-hook on the Hugging Face body from the step's
attention mask and KV-cache length, so one-token generation steps are never mistaken for
position 0 of a prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from probes.cache.store import SITE_HOOKS
from probes.directions import Direction, Eraser
from probes.errors import ProbesError
from probes.models.batching import (
    batch_rows,
    collate,
    current_rows,
    declared_prompt_lengths,
    encode,
    length_sorted_batches,
    pad_token_id,
)
from probes.models.compat import cached_length
from probes.models.loading import LoadedModel
from probes.validate import check_float

Scope = Literal["prompt", "generation", "all"]
SCOPES: tuple[str, ...] = ("prompt", "generation", "all")


@dataclass(frozen=True)
class StepInfo:
    """Where the tokens of the current forward step sit."""

    generation: bool
    token_index: Int[Tensor, "batch q"]
    real: Bool[Tensor, "batch q"]
    prompt_length: Int[Tensor, " batch"]


class _StepTracker:
    """Forward pre-hook on the HF body recording the current step's token positions."""

    def __init__(self) -> None:
        self.step: StepInfo | None = None
        self.prompt_length: Tensor | None = None
        self.users = 0
        self.handle: Any = None

    def pre_hook(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        x = ids if ids is not None else kwargs.get("inputs_embeds")
        if x is None:
            return
        b, q = int(x.shape[0]), int(x.shape[1])
        past = cached_length(kwargs)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, Tensor) and mask.dim() == 2:
            mask = mask.to(x.device).long()
            token_index = (mask.cumsum(1) - 1).clamp(min=0)[:, -q:]
            real = mask[:, -q:].bool()
            total = mask.sum(1)
        else:
            token_index = torch.arange(past, past + q, device=x.device).expand(b, q)
            real = torch.ones(b, q, dtype=torch.bool, device=x.device)
            total = torch.full((b,), past + q, device=x.device)
        generation = past > 0
        declared = declared_prompt_lengths()
        if not generation and declared is not None and len(declared) == b:
            total = declared.to(x.device)  # the rest of the row is a scored continuation
        if not generation or self.prompt_length is None or len(self.prompt_length) != b:
            self.prompt_length = total
        self.step = StepInfo(generation, token_index, real, self.prompt_length)


_TRACKER_KEY = "step_tracker"


@contextmanager
def tracking_steps(model: LoadedModel) -> Iterator[_StepTracker]:
    """Install (once per model, reference-counted) the pre-hook that records step positions."""
    tracker = model.extra.get(_TRACKER_KEY)
    if tracker is None:
        tracker = model.extra[_TRACKER_KEY] = _StepTracker()
    if tracker.users == 0:
        body = model.hf_model.base_model
        tracker.handle = body.register_forward_pre_hook(tracker.pre_hook, with_kwargs=True)
    tracker.users += 1
    try:
        yield tracker
    finally:
        tracker.users -= 1
        if tracker.users == 0:
            tracker.handle.remove()
            tracker.handle = None
            tracker.step = None
            tracker.prompt_length = None


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ProbesError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")


def _targets(step: StepInfo, positions: Sequence[int]) -> Int[Tensor, "batch k"]:
    """Prompt-coordinate targets per row (negative indices count from the prompt's end)."""
    pos = torch.as_tensor(list(positions), dtype=torch.long, device=step.token_index.device)
    length = step.prompt_length.to(pos.device)[:, None]
    pos = pos[None, :].expand(len(length), -1)
    return torch.where(pos < 0, length + pos, pos)


def selected(step: StepInfo, scope: str, positions: Sequence[int] | None) -> Bool[Tensor, "b q"]:
    """Which query positions of this step an intervention with ``scope``/``positions`` touches."""
    if (scope == "prompt" and step.generation) or (scope == "generation" and not step.generation):
        return torch.zeros_like(step.real)
    if positions is None:
        return step.real
    hit = (step.token_index[:, :, None] == _targets(step, positions)[:, None, :]).any(-1)
    return step.real & hit


def _check_width(width: int, model: LoadedModel, what: str, layer: int) -> None:
    """A vector that does not fit the model's residual width is a one-line error."""
    if width != model.d_model:
        raise ProbesError(
            f"{what} at layer {layer} has width {width}, but {model.name} has d_model "
            f"{model.d_model}: it was made for another model"
        )


def _hook_name(site: str, layer: int, model: LoadedModel) -> str:
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ProbesError(f"layer must be an integer, got {layer!r}")
    if site not in SITE_HOOKS:
        raise ProbesError(f"unknown site {site!r}; choose from {', '.join(SITE_HOOKS)}")
    if not 0 <= layer < model.n_layers:
        raise ProbesError(f"layer {layer} is out of range for {model.name} ({model.n_layers})")
    return SITE_HOOKS[site].format(layer=layer)


@contextmanager
def _hooked(
    model: LoadedModel, hooks: Sequence[tuple[str, Callable[..., Tensor | None]]]
) -> Iterator[None]:
    """Install hooks ``fn(acts, step) -> new acts`` with step tracking; always removed."""
    with tracking_steps(model) as tracker:

        def wrap(fn: Callable[..., Tensor | None]) -> Callable[..., Any]:
            def hook(acts: Tensor, hook: Any) -> Tensor | None:
                step = tracker.step
                if step is None or step.real.shape != acts.shape[:2]:
                    raise ProbesError(
                        "an intervention hook fired outside a tracked forward pass of the body"
                    )
                return fn(acts, step)

            return hook

        with model.bridge.hooks(fwd_hooks=[(name, wrap(fn)) for name, fn in hooks]):
            yield


# --------------------------------------------------------------------------------------------
# steer, ablate, erase
# --------------------------------------------------------------------------------------------


def _as_list(items: Any) -> list[Any]:
    return list(items) if isinstance(items, list | tuple) else [items]


@contextmanager
def steer(
    model: LoadedModel,
    directions: Direction | Sequence[Direction],
    strength: float,
    *,
    scope: Scope | str = "all",
    positions: Sequence[int] | None = None,
) -> Iterator[None]:
    """Add ``strength`` x typical residual norm x unit direction at each direction's layer.

    Several directions (e.g. one per layer of a band) are all added, each at its own hook.
    """
    _check_scope(scope)
    hooks = []
    check_float("steering strength", strength)
    for direction in _as_list(directions):
        _check_width(direction.vector.shape[-1], model, "the direction", direction.layer)
        delta = direction.scaled(strength)

        def fn(acts: Tensor, step: StepInfo, delta: Tensor = delta) -> Tensor:
            where = selected(step, scope, positions)
            return acts + where[..., None].to(acts.dtype) * delta.to(acts.device, acts.dtype)

        hooks.append((_hook_name(direction.site, direction.layer, model), fn))
    with _hooked(model, hooks):
        yield


def orthonormal_basis(vectors: Float[Tensor, "k d"]) -> Float[Tensor, "d r"]:
    """An orthonormal basis of the span of the rows (rank-revealing, drops null directions)."""
    u, s, _ = torch.linalg.svd(vectors.double().T, full_matrices=False)
    keep = s > s.max() * 1e-8
    return u[:, keep]


def _grouped_bases(
    directions: Direction | Sequence[Direction] | Tensor,
    layers: Sequence[int] | None,
    site: str,
) -> dict[tuple[str, int], Tensor]:
    if isinstance(directions, Tensor):
        if layers is None:
            raise ProbesError("ablating a raw tensor needs layers=...")
        vectors = directions.reshape(-1, directions.shape[-1])
        return {(site, int(layer)): orthonormal_basis(vectors) for layer in layers}
    grouped: dict[tuple[str, int], list[Tensor]] = {}
    for d in _as_list(directions):
        targets = [d.layer] if layers is None else list(layers)
        for layer in targets:
            grouped.setdefault((d.site, int(layer)), []).append(d.vector)
    return {key: orthonormal_basis(torch.stack(vs)) for key, vs in grouped.items()}


@contextmanager
def ablate(
    model: LoadedModel,
    directions: Direction | Sequence[Direction] | Float[Tensor, "k d_model"],
    *,
    layers: Sequence[int] | None = None,
    site: str = "resid_post",
    scope: Scope | str = "all",
    positions: Sequence[int] | None = None,
) -> Iterator[None]:
    """Project the span of the directions out of the activation (``x - Q Q^T x``).

    Directions act at their own layer unless ``layers`` is given; several directions at one
    layer are ablated as a subspace.
    """
    _check_scope(scope)
    hooks = []
    for (site_name, layer), basis in _grouped_bases(directions, layers, site).items():
        _check_width(basis.shape[0], model, "the ablated direction", layer)

        def fn(acts: Tensor, step: StepInfo, basis: Tensor = basis) -> Tensor:
            q = basis.to(acts.device, acts.dtype)
            where = selected(step, scope, positions)[..., None].to(acts.dtype)
            return acts - where * ((acts @ q) @ q.T)

        hooks.append((_hook_name(site_name, layer, model), fn))
    with _hooked(model, hooks):
        yield


@contextmanager
def erase(
    model: LoadedModel,
    erasers: Eraser | Sequence[Eraser],
    *,
    scope: Scope | str = "all",
    positions: Sequence[int] | None = None,
) -> Iterator[None]:
    """Apply LEACE erasers, each at its own layer and site."""
    _check_scope(scope)
    hooks = []
    for eraser in _as_list(erasers):
        widths = {eraser.bias.shape[-1], eraser.proj_left.shape[0], eraser.proj_right.shape[-1]}
        if len(widths) > 1:
            raise ProbesError(f"the eraser at layer {eraser.layer} has mismatched widths {widths}")
        _check_width(widths.pop(), model, "the eraser", eraser.layer)

        def fn(acts: Tensor, step: StepInfo, eraser: Eraser = eraser) -> Tensor:
            where = selected(step, scope, positions)[..., None]
            return torch.where(where, eraser(acts), acts)

        hooks.append((_hook_name(eraser.site, eraser.layer, model), fn))
    with _hooked(model, hooks):
        yield


# --------------------------------------------------------------------------------------------
# record and patch
# --------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised after the last recorded hook: nothing later is needed."""


@torch.inference_mode()
def record(
    model: LoadedModel,
    prompts: Sequence[str],
    layers: Sequence[int],
    *,
    site: str = "resid_post",
    positions: Sequence[int] | None = (-1,),
    batch_size: int = 16,
) -> dict[int, Float[Tensor, "n k d_model"]]:
    """Activations of ``prompts`` at ``layers`` and prompt ``positions`` (under any active
    interventions). ``positions=None`` records every prompt token: ``[n, longest, d]``,
    indexed by token position, zero past each prompt's end.
    """
    layers = sorted({int(layer) for layer in layers})
    ids = encode(model.tokenizer, prompts)
    if positions is not None:
        shortest = min(len(s) for s in ids)
        if any(p >= shortest or p < -shortest for p in positions):
            raise ProbesError(
                f"positions {list(positions)} do not all exist in a prompt of {shortest} tokens"
            )
    width = len(positions) if positions is not None else max(len(s) for s in ids)
    out = {layer: torch.zeros(len(ids), width, model.d_model) for layer in layers}
    last = layers[-1]

    def make(layer: int) -> Callable[[Tensor, StepInfo], None]:
        def fn(acts: Tensor, step: StepInfo) -> None:
            rows = current_rows(acts.shape[0])
            if positions is None:
                for r, row in enumerate(rows.tolist()):
                    keep = step.real[r]
                    out[layer][row, step.token_index[r][keep]] = acts[r][keep].float().cpu()
            else:
                match = step.token_index[:, :, None] == _targets(step, positions)[:, None, :]
                match &= step.real[:, :, None]
                picked = torch.einsum("bqk,bqd->bkd", match.to(acts.dtype), acts)
                out[layer][rows] = picked.float().cpu()
            if layer == last:
                raise _Stop

        return fn

    hooks = [(_hook_name(site, layer, model), make(layer)) for layer in layers]
    body = model.hf_model.base_model
    with _hooked(model, hooks):
        for idx in length_sorted_batches([len(s) for s in ids], batch_size):
            seqs = [ids[i] for i in idx]
            batch = collate(seqs, pad_token_id(model.tokenizer), "left", model.device)
            with batch_rows(idx), suppress(_Stop):
                body(**batch.model_kwargs(), use_cache=False)
    return out


@contextmanager
def patch(
    model: LoadedModel,
    values: dict[int, Float[Tensor, "n k d_model"]],
    *,
    site: str = "resid_post",
    positions: Sequence[int] | None = (-1,),
    basis: Float[Tensor, "r d_model"] | None = None,
    token_mask: Bool[Tensor, "n longest"] | None = None,
    scope: Scope | str = "prompt",
) -> Iterator[None]:
    """Write recorded activations (from :func:`record`) at ``positions`` of each layer.

    Row ``i`` of ``values`` goes to prompt ``i`` of the caller's list (behaviour functions
    declare their batch rows; a direct call uses the batch order). With ``basis`` only the
    component in its span is replaced: ``x + Q Q^T (source - x)``, the rest of ``x`` is kept.
    With ``positions=None``, ``token_mask[i]`` (prompt coordinates) picks which tokens of
    prompt ``i`` are patched; without it every prompt token is.
    """
    if token_mask is not None and positions is not None:
        raise ProbesError("token_mask works with positions=None (it names the tokens itself)")
    _check_scope(scope)
    q_basis = None if basis is None else orthonormal_basis(basis.reshape(-1, basis.shape[-1]))
    hooks = []
    for layer, source in values.items():

        def fn(acts: Tensor, step: StepInfo, source: Tensor = source) -> Tensor:
            rows = current_rows(acts.shape[0])
            if rows.numel() != acts.shape[0] or int(rows.max()) >= source.shape[0]:
                raise ProbesError(
                    f"patch values hold {source.shape[0]} prompts; the batch does not match them"
                )
            src = source[rows].to(acts.device, acts.dtype)
            where = selected(step, scope, positions)
            if positions is None:
                beyond = where & (step.token_index >= src.shape[1])
                if token_mask is None and bool(beyond.any()):
                    raise ProbesError(
                        "patch values are shorter than the prompt they are written into; "
                        "pass token_mask or record a source at least as long"
                    )
                index = step.token_index.clamp(max=src.shape[1] - 1)
                new = torch.gather(src, 1, index[..., None].expand(-1, -1, src.shape[-1]))
                if token_mask is not None:
                    tokens = token_mask[rows].to(acts.device)
                    inside = step.token_index < tokens.shape[1]
                    index = step.token_index.clamp(max=tokens.shape[1] - 1)
                    where = where & inside & torch.gather(tokens, 1, index)
            else:
                match = step.token_index[:, :, None] == _targets(step, positions)[:, None, :]
                new = torch.einsum("bqk,bkd->bqd", match.to(acts.dtype), src)
            change = new - acts
            if q_basis is not None:
                qb = q_basis.to(acts.device, acts.dtype)
                change = (change @ qb) @ qb.T
            return acts + where[..., None].to(acts.dtype) * change

        hooks.append((_hook_name(site, int(layer), model), fn))
    with _hooked(model, hooks):
        yield
