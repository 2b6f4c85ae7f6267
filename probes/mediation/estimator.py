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

Effects are computed per twin pair, averaged with bootstrap intervals and tested with a
sign-flip permutation test. ``docs/mediation.md`` explains what the estimates mean.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
from probes.models.batching import encode
from probes.models.loading import LoadedModel
from probes.stats import bootstrap_indices, percentile_interval, sign_flip_p_value

if TYPE_CHECKING:
    from probes.cache.store import ActivationStore

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
EFFECTS: tuple[str, ...] = ("te", "nie", "nde", "mismatch")


# --------------------------------------------------------------------------------------------
# Statistics over twins
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EffectEstimate:
    """The mean of per-twin effects, its 95% percentile-bootstrap interval and a sign-flip p."""

    mean: float
    ci_low: float
    ci_high: float
    p_value: float

    def to_dict(self) -> dict[str, float]:
        return {
            "mean": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p": self.p_value,
        }


def _as_array(values: Sequence[float] | np.ndarray | Tensor) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, float)
    if array.ndim != 1 or len(array) == 0:
        raise ProbesError("effects must be a non-empty 1-d array (one value per twin pair)")
    return array


def estimate_effect(
    values: Sequence[float] | np.ndarray | Tensor,
    *,
    n_boot: int = 2000,
    n_perm: int = 10_000,
    seed: int = 0,
    indices: np.ndarray | None = None,
) -> EffectEstimate:
    """Mean, 95% bootstrap interval (over twins) and sign-flip p-value of per-twin effects."""
    values = _as_array(values)
    idx = bootstrap_indices(len(values), n_boot, seed) if indices is None else indices
    low, high = percentile_interval(values[idx].mean(axis=1))
    p = sign_flip_p_value(values, n_perm, seed + 1)
    return EffectEstimate(float(values.mean()), low, high, p)


def ratio_of_means(
    numerator: np.ndarray, denominator: np.ndarray, indices: np.ndarray
) -> tuple[float, float, float]:
    """``mean(numerator) / mean(denominator)`` with a paired percentile-bootstrap interval."""
    den = denominator.mean()
    point = float(numerator.mean() / den) if den != 0 else math.nan
    boot_den = denominator[indices].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.where(boot_den != 0, numerator[indices].mean(axis=1) / boot_den, np.nan)
    return (point, *percentile_interval(boot))


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True, eq=False)
class LayerMediation:
    """TE, NIE, NDE and their mismatch at one layer for one mediator, over ``n_twins`` pairs.

    ``proportion_mediated`` is mean NIE / mean TE (with a paired bootstrap interval);
    ``proportion_median`` is the median of per-twin NIE/TE over twins with a non-zero TE.
    ``per_twin`` holds the metric under each condition and the per-twin effects.
    """

    layer: int
    site: str
    mediator: str
    rank: int | None  # dimension of the mediator subspace; None for the whole residual
    positions: tuple[int, ...] | None  # prompt positions patched; None = every token
    n_twins: int
    te: EffectEstimate
    nie: EffectEstimate
    nde: EffectEstimate
    mismatch: EffectEstimate
    proportion_mediated: float
    proportion_ci: tuple[float, float]
    proportion_median: float
    per_twin: dict[str, np.ndarray] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: every estimate, the interval bounds and the per-twin arrays."""
        return {
            "layer": self.layer,
            "site": self.site,
            "mediator": self.mediator,
            "rank": self.rank,
            "positions": list(self.positions) if self.positions is not None else "all",
            "n_twins": self.n_twins,
            **{name: getattr(self, name).to_dict() for name in EFFECTS},
            "proportion_mediated": _clean(self.proportion_mediated),
            "proportion_ci": [_clean(x) for x in self.proportion_ci],
            "proportion_median": _clean(self.proportion_median),
            "per_twin": {k: [_clean(float(x)) for x in v] for k, v in self.per_twin.items()},
        }


def summarize(
    y_x: np.ndarray,
    y_xp: np.ndarray,
    y_x_med: np.ndarray,
    y_xp_med: np.ndarray,
    *,
    layer: int,
    site: str = "resid_post",
    mediator: str = "residual",
    rank: int | None = None,
    positions: tuple[int, ...] | None = (-1,),
    n_boot: int = 2000,
    n_perm: int = 10_000,
    seed: int = 0,
) -> LayerMediation:
    """Effects from the four metric values per twin: Y(x), Y(x'), Y(x, M(x')), Y(x', M(x))."""
    y_x, y_xp, y_x_med, y_xp_med = (_as_array(a) for a in (y_x, y_xp, y_x_med, y_xp_med))
    te, nie, nde = y_xp - y_x, y_x_med - y_x, y_xp_med - y_x
    per_twin = {
        "y_x": y_x,
        "y_counterfactual": y_xp,
        "y_x_mediator_from_counterfactual": y_x_med,
        "y_counterfactual_mediator_from_x": y_xp_med,
        "te": te,
        "nie": nie,
        "nde": nde,
        "mismatch": te - nde - nie,
    }
    idx = bootstrap_indices(len(te), n_boot, seed)
    estimates = {
        name: estimate_effect(per_twin[name], n_perm=n_perm, seed=seed, indices=idx)
        for name in EFFECTS
    }
    proportion, low, high = ratio_of_means(nie, te, idx)
    nonzero = np.abs(te) > 1e-9
    median = float(np.median(nie[nonzero] / te[nonzero])) if nonzero.any() else math.nan
    return LayerMediation(
        layer=int(layer),
        site=site,
        mediator=mediator,
        rank=rank,
        positions=positions,
        n_twins=len(te),
        **estimates,
        proportion_mediated=proportion,
        proportion_ci=(low, high),
        proportion_median=median,
        per_twin=per_twin,
    )


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


# --------------------------------------------------------------------------------------------
# Case studies (the IP paper's three, on built-in behaviour items)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseStudy:
    """A behaviour attribute, its twin cues (x -> x'), its metric and its probing dataset."""

    name: str
    behavior: str
    store_dataset: str
    base_cue: str
    counter_cue: str
    metric: str
    question: str


CASE_STUDIES: dict[str, CaseStudy] = {
    "dialect": CaseStudy(
        "dialect",
        "dialect",
        "dialect_us_uk",
        "us",
        "uk",
        "log_odds",
        "US -> UK spelling and vocabulary: log-odds of the UK vs the US answer set",
    ),
    "proficiency": CaseStudy(
        "proficiency",
        "proficiency",
        "proficiency",
        "native",
        "non_native",
        "positive_logprob",
        "native -> non-native English, same question: log-probability of the correct answer",
    ),
    "echo_chamber": CaseStudy(
        "echo_chamber",
        "belief",
        "belief",
        "true",
        "false",
        "log_odds",
        "stated true -> false belief: log-odds of the correct vs the user's (false) answer",
    ),
}


def case_study(name: str) -> CaseStudy:
    """A case study by its name or by its behaviour attribute (``belief`` = ``echo_chamber``)."""
    for case in CASE_STUDIES.values():
        if name in (case.name, case.behavior):
            return case
    raise ProbesError(f"no case study {name!r}; choose from {', '.join(CASE_STUDIES)}")


def direction_accuracy(
    store: ActivationStore,
    layers: Sequence[int],
    source: str,
    target: str,
    *,
    site: str = "resid_post",
    n_folds: int = 5,
    seed: int = 0,
) -> dict[int, float]:
    """Held-out accuracy of a mean-difference classifier (project on mean(target) - mean(source),
    threshold at the midpoint) with folds grouped by template family: is the attribute there,
    along the very direction used as the mediator?"""
    from probes.probing.layerwise import make_splits

    labels = np.asarray([str(x) for x in store.labels])
    keep = (labels == source) | (labels == target)
    y = labels[keep] == target
    if y.all() or not y.any():
        raise ProbesError(f"the store needs both labels {source!r} and {target!r}")
    groups = [g for g, k in zip(store.column("group"), keep, strict=True) if k]
    splits = make_splits(y, groups, n_folds, seed)
    rows = torch.as_tensor(np.flatnonzero(keep))
    out = {}
    for layer in layers:
        x = store.get(layer, site)[rows].double()
        correct = np.zeros(len(y), dtype=bool)
        for train in splits.train_masks:
            tr, te = torch.as_tensor(train), torch.as_tensor(~train)
            mu_t = x[tr & torch.as_tensor(y)].mean(0)
            mu_s = x[tr & ~torch.as_tensor(y)].mean(0)
            w = mu_t - mu_s
            score = x[te] @ w - float(w @ (mu_t + mu_s)) / 2
            correct[~train] = (score > 0).numpy() == y[~train]
        out[int(layer)] = float(correct.mean())
    return out


def default_layers(n_layers: int, best: int | None = None, step: int = 3) -> list[int]:
    """Every ``step``-th layer, the last layer, and the best one."""
    layers = set(range(0, n_layers, step)) | {n_layers - 1}
    if best is not None:
        layers.add(int(best))
    return sorted(layers)


def subset_pairs(pairs: Sequence[Any], n: int | None, seed: int = 0) -> list[Any]:
    """``n`` pairs drawn without replacement by ``seed`` (kept in file order); all if None."""
    if n is None or n >= len(pairs):
        return list(pairs)
    if n < 1:
        raise ProbesError(f"need at least one twin pair, got {n}")
    keep = sorted(np.random.default_rng(seed).choice(len(pairs), size=n, replace=False))
    return [pairs[i] for i in keep]


def _fmt_ci(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"[{low:+.2f}, {high:+.2f}]"


def _fmt_p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def markdown_table(
    results: Sequence[LayerMediation], accuracy: Mapping[int, float] | None = None
) -> str:
    """One row per layer: TE, NIE, NDE, mismatch with intervals, proportion mediated, p, n.

    The proportion is left out (``n/a (TE n.s.)``) where TE's p-value is 0.05 or more.
    """
    names = ["layer", "TE [95% CI]", "NIE [95% CI]", "NDE [95% CI]", "mismatch"]
    names += ["prop. mediated [95% CI]", "p (TE / NIE / NDE)", "n"]
    if accuracy is not None:
        names.insert(1, "dir. acc.")
    lines = ["| " + " | ".join(names) + " |", "|" + "---:|" * len(names)]
    for r in results:
        prop = r.proportion_mediated
        if not math.isfinite(prop):
            prop_s = "n/a"
        elif r.te.p_value >= 0.05:  # a ratio over a total effect indistinguishable from zero
            prop_s = "n/a (TE n.s.)"
        else:
            prop_s = f"{prop:+.2f} {_fmt_ci(*r.proportion_ci)}"
        cells = [
            str(r.layer),
            *([f"{accuracy[r.layer]:.3f}"] if accuracy is not None else []),
            f"{r.te.mean:+.2f} {_fmt_ci(r.te.ci_low, r.te.ci_high)}",
            f"{r.nie.mean:+.2f} {_fmt_ci(r.nie.ci_low, r.nie.ci_high)}",
            f"{r.nde.mean:+.2f} {_fmt_ci(r.nde.ci_low, r.nde.ci_high)}",
            f"{r.mismatch.mean:+.2f}",
            prop_s,
            f"{_fmt_p(r.te.p_value)} / {_fmt_p(r.nie.p_value)} / {_fmt_p(r.nde.p_value)}",
            str(r.n_twins),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def analyse_case_study(
    model: LoadedModel,
    case: CaseStudy,
    *,
    layers: Sequence[int] | None = None,
    pairs: int | None = None,
    method: str = "mean_diff",
    directions: Sequence[Direction] | None = None,
    mediators: Sequence[str] = ("subspace", "residual"),
    positions: Positions = (-1,),
    n_boot: int = 2000,
    n_perm: int = 10_000,
    seed: int = 0,
    progress: bool = True,
    store_size: int | None = None,
) -> tuple[dict[str, Any], dict[str, list[LayerMediation]]]:
    """Mediation of one case study through the attribute subspace and/or the whole residual.

    The subspace at each layer is ``method``'s direction (x's cue -> x''s cue) fitted on the
    probing dataset's store at that layer (``store_size`` examples; None: the dataset's
    default), unless ``directions`` are given. Without
    ``layers``: every 3rd layer, the last, and the layer where that direction classifies best.
    Returns the JSON-able payload and the per-mediator results; writes and prints nothing.
    """
    import time

    from probes.cache.extract import extract_dataset
    from probes.datasets import load_behavior_items, load_dataset
    from probes.directions import fit_direction

    unknown = set(mediators) - {"subspace", "residual"}
    if unknown or not mediators:
        raise ProbesError(f"mediators must be 'subspace' and/or 'residual', got {list(mediators)}")
    start = time.perf_counter()
    twins = subset_pairs(
        twin_pairs(load_behavior_items(case.behavior), case.base_cue, case.counter_cue), pairs, seed
    )
    accuracy: dict[int, float] | None = None
    if directions:
        chosen = sorted({d.layer for d in directions}) if layers is None else list(layers)
        subspace: MediatorSpec = list(directions)
    else:
        store = extract_dataset(
            model, load_dataset(case.store_dataset, size=store_size), layers="all", position="last"
        )
        accuracy = direction_accuracy(
            store, store.layers, case.base_cue, case.counter_cue, seed=seed
        )
        best = max(accuracy, key=lambda k: (accuracy[k], -k))
        chosen = default_layers(model.n_layers, best) if layers is None else list(layers)
        subspace = {
            layer: fit_direction(store, layer, method, case.base_cue, case.counter_cue)
            for layer in chosen
        }
    specs: dict[str, MediatorSpec] = {}
    if "subspace" in mediators:
        specs["subspace"] = subspace
    if "residual" in mediators:
        specs["residual"] = None
    results = mediate_many(
        model,
        twins,
        METRICS[case.metric],
        specs,
        chosen,
        positions=positions,
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
        progress=progress,
    )
    payload = {
        "case_study": case.name,
        "question": case.question,
        "model": model.describe(),
        "x_cue": case.base_cue,
        "counterfactual_cue": case.counter_cue,
        "metric": case.metric,
        "direction_method": None if directions else method,
        "direction_accuracy": accuracy,
        "pairs": [[x.pair_id, xp.pair_id] for x, xp in twins],
        "config": {"n_boot": n_boot, "n_perm": n_perm, "seed": seed, "layers": chosen},
        "seconds": round(time.perf_counter() - start, 1),
        "results": {name: [r.to_dict() for r in rows] for name, rows in results.items()},
    }
    return payload, results


def run_case_study(model: LoadedModel, case: CaseStudy, *, out: str | Path, **kwargs: Any) -> dict:
    """:func:`analyse_case_study`, then print the markdown tables and write ``results.json``
    and ``mediation_{case}.html/.png`` into ``out``; returns the payload."""
    from probes.atomic import atomic_write_json
    from probes.viz.figures import save_figure
    from probes.viz.mediation import plot_mediation

    payload, results = analyse_case_study(model, case, **kwargs)
    accuracy = payload["direction_accuracy"]
    method = payload["direction_method"]
    for name, rows in results.items():
        what = "whole residual" if name == "residual" else f"{method or 'given'} direction(s)"
        print(f"\n### {case.name}: mediator = {what} at the last token ({case.question})\n")
        print(markdown_table(rows, accuracy if name == "subspace" else None))
    if accuracy is not None:
        best = max(accuracy, key=lambda k: (accuracy[k], -k))
        print(
            f"\nheld-out accuracy of the {case.base_cue}/{case.counter_cue} mean-difference "
            f"classifier on {case.store_dataset}: best layer {best} ({accuracy[best]:.3f}); "
            "chance 0.5"
        )
    out = Path(out)
    atomic_write_json(out / "results.json", payload)
    fig = plot_mediation(results, title=f"{case.name}: mediation by layer", subtitle=case.question)
    files = save_figure(fig, out / f"mediation_{case.name}")
    print(f"\nresults: {out / 'results.json'}; figures: {', '.join(str(f) for f in files)}")
    n_pairs, chosen = len(payload["pairs"]), payload["config"]["layers"]
    print(f"{case.name}: {payload['seconds']:.0f} s for {n_pairs} twin pairs, layers {chosen}")
    return payload
