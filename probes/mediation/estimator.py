"""Causal mediation of implicit personalization: does a cue's effect on the answer run through a
mediator inside the model (an attribute subspace of the residual stream, or all of it)?

Jin et al. (2024) model implicit personalization as prompt -> inferred user background
(mediator) -> answer. With the model's internals we can set the mediator directly. For twins
``x`` (cue A) and ``x'`` (cue B) with the same content, a mediator ``M`` at a layer and a
behaviour metric ``Y`` (Pearl 2001; Vig et al. 2020):

- total effect ``TE = Y(x') - Y(x)``;
- natural indirect effect ``NIE = Y(x, M <- M(x')) - Y(x)``;
- natural direct effect ``NDE = Y(x', M <- M(x)) - Y(x)``;
- ``mismatch = TE - (NDE + NIE)``, zero when the two routes add up, non-zero under interaction.

This module resolves mediators, scores the metrics and runs the patched passes; the statistics
over twins are in ``probes.mediation.effects``, the case studies in ``probes.mediation.cases``.
``docs/mediation.md`` explains what the estimates mean.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from probes.behavior.twins import Metric, twin_pairs
from probes.directions import Direction
from probes.errors import ProbesError
from probes.interventions.hooks import patch, record
from probes.interventions.prefix_reuse import resume_from
from probes.mediation.effects import LayerMediation, summarize
from probes.models.batching import encode
from probes.models.loading import LoadedModel

PromptFn = Callable[[LoadedModel, Sequence[Any]], list[str]]
# A mediator: None / "residual" (the whole residual), a basis tensor [r, d] or [d] used at every
# layer, Directions (each at its own layer; several at one layer span a subspace), or a mapping
# layer -> any of those.
MediatorSpec = (
    None
    | str
    | Tensor
    | Direction
    | Sequence[Direction]
    | Mapping[int, "Tensor | Direction | Sequence[Direction] | None"]
)
Positions = Sequence[int] | Literal["all"]


# --------------------------------------------------------------------------------------------
# Mediators, prompts, metrics
# --------------------------------------------------------------------------------------------


def _basis_of(value: Any, layer: int, site: str, d_model: int) -> Tensor | None:
    """One layer's mediator basis ``[r, d]`` (None = whole residual)."""
    if value is None or (isinstance(value, str) and value == "residual"):
        return None
    if isinstance(value, Direction):
        value = [value]
    if isinstance(value, Tensor):
        basis = value.reshape(-1, value.shape[-1]).float()
    elif isinstance(value, Sequence) and value and all(isinstance(d, Direction) for d in value):
        for d in value:
            if d.layer != layer or d.site != site:
                raise ProbesError(
                    f"a direction fitted at {d.site} layer {d.layer} was given as the mediator "
                    f"at {site} layer {layer}"
                )
        basis = torch.stack([d.vector.float() for d in value])
    else:
        raise ProbesError(f"cannot use {type(value).__name__} as a mediator at layer {layer}")
    if basis.shape[-1] != d_model:
        raise ProbesError(f"mediator basis has width {basis.shape[-1]}, the model {d_model}")
    if not torch.isfinite(basis).all() or float(basis.norm()) == 0:
        raise ProbesError(f"the mediator basis at layer {layer} is zero or not finite")
    return basis


def mediator_bases(
    mediator: MediatorSpec, layers: Sequence[int] | None, n_layers: int, d_model: int, site: str
) -> dict[int, Tensor | None]:
    """Resolve a mediator spec into ``{layer: basis or None}`` for the layers to analyse.

    Without ``layers``: the directions' own layers, or every layer for a tensor or the residual.
    """
    if isinstance(mediator, str) and mediator != "residual":
        raise ProbesError(f"mediator {mediator!r}: use 'residual', a tensor or directions")
    if isinstance(mediator, Direction):
        mediator = [mediator]
    per_layer: Mapping[int, Any] | None = None
    if isinstance(mediator, Mapping):
        per_layer = {int(k): v for k, v in mediator.items()}
    elif isinstance(mediator, Sequence) and not isinstance(mediator, str):
        grouped: dict[int, list[Direction]] = defaultdict(list)
        for d in mediator:
            if not isinstance(d, Direction):
                raise ProbesError("a list mediator must hold Directions")
            grouped[d.layer].append(d)
        per_layer = grouped
    if per_layer is not None:
        chosen = sorted(per_layer) if layers is None else [int(x) for x in layers]
        missing = [layer for layer in chosen if layer not in per_layer]
        if missing:
            raise ProbesError(f"the mediator has no basis at layers {missing}")
    else:
        chosen = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if not chosen:
        raise ProbesError("no layers to analyse")
    for layer in chosen:
        if not 0 <= layer < n_layers:
            raise ProbesError(f"layer {layer} is out of range (the model has {n_layers})")
    source = per_layer if per_layer is not None else defaultdict(lambda: mediator)
    return {layer: _basis_of(source[layer], layer, site, d_model) for layer in sorted(set(chosen))}


def default_prompts(model: LoadedModel, items: Sequence[Any]) -> list[str]:
    """Prompts for strings (as they are) or behaviour items (rendered with their answer prefix)."""
    if all(isinstance(item, str) for item in items):
        return list(items)
    from probes.datasets import BehaviorItem, render_behavior

    if all(isinstance(item, BehaviorItem) for item in items):
        return render_behavior(items, tokenizer=model.tokenizer)
    raise ProbesError("twins must be prompts (str) or BehaviorItems, or pass prompts=...")


def answer_log_odds(model: LoadedModel, items: Sequence[Any]) -> Float[Tensor, " n"]:
    """log p(positive answer set) - log p(negative set) after each behaviour item's prompt."""
    from probes.behavior.scoring import behavior_log_odds

    return behavior_log_odds(model, items).float()


def positive_answer_logprob(model: LoadedModel, items: Sequence[Any]) -> Float[Tensor, " n"]:
    """log p(positive answer set), e.g. of the correct answer, after each item's prompt."""
    from probes.behavior.scoring import answer_set_logprobs
    from probes.datasets import render_behavior

    prompts = render_behavior(items, tokenizer=model.tokenizer)
    return answer_set_logprobs(model, prompts, [[it.answers[it.positive]] for it in items])[
        :, 0
    ].float()


METRICS: dict[str, Metric] = {
    "log_odds": answer_log_odds,
    "positive_logprob": positive_answer_logprob,
}


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------


def _call_metric(metric: Metric, model: LoadedModel, items: Sequence[Any]) -> np.ndarray:
    values = metric(model, items)
    array = np.asarray(values.detach().cpu().double() if isinstance(values, Tensor) else values)
    if array.shape != (len(items),):
        raise ProbesError(f"the metric returned shape {array.shape}, expected ({len(items)},)")
    return array.astype(float)


def _positions(
    model: LoadedModel,
    prompt_fn: PromptFn,
    xs: Sequence[Any],
    xps: Sequence[Any],
    positions: Positions,
) -> tuple[list[str], tuple[int, ...] | None]:
    prompts = prompt_fn(model, list(xs) + list(xps))
    if isinstance(positions, str):
        if positions != "all":
            raise ProbesError(f"positions must be a list of ints or 'all', got {positions!r}")
        lengths = [len(ids) for ids in encode(model.tokenizer, prompts)]
        n = len(xs)
        unequal = sum(a != b for a, b in zip(lengths[:n], lengths[n:], strict=True))
        if unequal:
            raise ProbesError(
                f"positions='all' needs twins of equal token length; {unequal} of {n} pairs "
                "differ (use the last token, positions=(-1,))"
            )
        return prompts, None
    chosen = tuple(int(p) for p in positions)
    if not chosen:
        raise ProbesError("positions is empty")
    return prompts, chosen


def mediate_many(
    model: LoadedModel,
    twins: Sequence[tuple[Any, Any]],
    metric: Metric,
    mediators: Mapping[str, MediatorSpec],
    layers: Sequence[int] | None = None,
    *,
    site: str = "resid_post",
    positions: Positions = (-1,),
    prompts: PromptFn | None = None,
    batch_size: int = 16,
    n_boot: int = 2000,
    n_perm: int = 10_000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, list[LayerMediation]]:
    """:func:`mediate` for several named mediators, sharing the clean runs and recordings."""
    if not twins:
        raise ProbesError("no twin pairs to mediate over")
    xs, xps = [x for x, _ in twins], [xp for _, xp in twins]
    n = len(xs)
    bases = {
        name: mediator_bases(spec, layers, model.n_layers, model.d_model, site)
        for name, spec in mediators.items()
    }
    all_layers = sorted({layer for b in bases.values() for layer in b})
    prompt_list, pos = _positions(model, prompts or default_prompts, xs, xps, positions)
    items = xs + xps
    # the clean pass keeps the residual entering each layer; each patched pass then re-runs
    # only the layers from its own on (the same numbers, fewer blocks)
    with resume_from(model, all_layers):
        clean = _call_metric(metric, model, items)
        recorded = record(
            model, prompt_list, all_layers, site=site, positions=pos, batch_size=batch_size
        )
        out: dict[str, list[LayerMediation]] = {name: [] for name in mediators}
        jobs = [(name, layer) for name, b in bases.items() for layer in b]
        for name, layer in tqdm(jobs, desc="mediation", disable=not progress, leave=False):
            basis = bases[name][layer]
            # x <- M(x'), x' <- M(x)
            swapped = torch.cat([recorded[layer][n:], recorded[layer][:n]])
            with patch(model, {layer: swapped}, site=site, positions=pos, basis=basis):
                patched = _call_metric(metric, model, items)
            out[name].append(
                summarize(
                    clean[:n],
                    clean[n:],
                    patched[:n],
                    patched[n:],
                    layer=layer,
                    site=site,
                    mediator=name,
                    rank=None if basis is None else int(torch.linalg.matrix_rank(basis.double())),
                    positions=pos,
                    n_boot=n_boot,
                    n_perm=n_perm,
                    seed=seed,
                )
            )
    return out


def mediate(
    model: LoadedModel,
    twins: Sequence[tuple[Any, Any]],
    metric: Metric,
    layers: Sequence[int] | None = None,
    *,
    mediator: MediatorSpec = None,
    name: str | None = None,
    site: str = "resid_post",
    positions: Positions = (-1,),
    prompts: PromptFn | None = None,
    batch_size: int = 16,
    n_boot: int = 2000,
    n_perm: int = 10_000,
    seed: int = 0,
    progress: bool = True,
) -> list[LayerMediation]:
    """TE, NIE, NDE per layer for twins ``(x, x')``, one patched run of all twins per layer.

    ``metric(model, items) -> Tensor[n]`` must score item ``i`` as prompt ``i`` of its list in
    its own forward pass (as every ``probes.behavior.scoring`` function does). ``mediator`` is the
    whole residual (None), a subspace basis or Directions; ``positions`` are the prompt
    positions it lives at (default the last token; ``"all"`` for twins of equal token length).
    """
    label = name or ("residual" if mediator is None or mediator == "residual" else "subspace")
    return mediate_many(
        model,
        twins,
        metric,
        {label: mediator},
        layers,
        site=site,
        positions=positions,
        prompts=prompts,
        batch_size=batch_size,
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
        progress=progress,
    )[label]


__all__ = [
    "METRICS",
    "MediatorSpec",
    "Metric",
    "Positions",
    "PromptFn",
    "answer_log_odds",
    "default_prompts",
    "mediate",
    "mediate_many",
    "mediator_bases",
    "positive_answer_logprob",
    "twin_pairs",
]
