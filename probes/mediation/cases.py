"""The IP paper's three case studies (dialect, proficiency, echo chamber) on built-in behaviour
items: twins, the attribute direction fitted per layer, mediation through it and through the
whole residual, and a markdown table of the results. Nothing here writes files or prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from probes.behavior.twins import twin_pairs
from probes.datasets.cues import CUES
from probes.directions import Direction
from probes.errors import ProbesError
from probes.mediation.effects import LayerMediation
from probes.mediation.estimator import METRICS, MediatorSpec, Positions, mediate_many
from probes.models.loading import LoadedModel

if TYPE_CHECKING:
    from probes.cache.store import ActivationStore


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
        CUES["dialect"].dataset,
        CUES["dialect"].lowering,
        CUES["dialect"].raising,
        "log_odds",
        "US -> UK spelling and vocabulary: log-odds of the UK vs the US answer set",
    ),
    "proficiency": CaseStudy(
        "proficiency",
        "proficiency",
        CUES["proficiency"].dataset,
        CUES["proficiency"].raising,
        CUES["proficiency"].lowering,
        "positive_logprob",
        "native -> non-native English, same question: log-probability of the correct answer",
    ),
    "echo_chamber": CaseStudy(
        "echo_chamber",
        "belief",
        CUES["belief"].dataset,
        CUES["belief"].raising,
        CUES["belief"].lowering,
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


@dataclass(frozen=True, eq=False)
class CaseStudyResult:
    """One case study's mediation: the per-mediator, per-layer results and how they were got."""

    case: CaseStudy
    model: dict[str, Any]  # LoadedModel.describe()
    direction_method: str | None  # None when the directions were given
    direction_accuracy: dict[int, float] | None  # held-out accuracy per layer (fitted case)
    pairs: list[list[str]]  # [x pair_id, x' pair_id] per twin pair
    config: dict[str, Any]  # n_boot, n_perm, seed, layers
    seconds: float
    results: dict[str, list[LayerMediation]] = field(repr=False)

    @property
    def best_layer(self) -> int | None:
        """The layer where the direction classifies best (ties: the earliest); None if given."""
        acc = self.direction_accuracy
        return None if acc is None else max(acc, key=lambda k: (acc[k], -k))

    def to_dict(self) -> dict[str, Any]:
        """The JSON payload (``results.json``; the ``probes run`` mediation stage's result)."""
        return {
            "case_study": self.case.name,
            "question": self.case.question,
            "model": self.model,
            "x_cue": self.case.base_cue,
            "counterfactual_cue": self.case.counter_cue,
            "metric": self.case.metric,
            "direction_method": self.direction_method,
            "direction_accuracy": self.direction_accuracy,
            "pairs": self.pairs,
            "config": self.config,
            "seconds": self.seconds,
            "results": {name: [r.to_dict() for r in rows] for name, rows in self.results.items()},
        }


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
) -> CaseStudyResult:
    """Mediation of one case study through the attribute subspace and/or the whole residual.

    The subspace at each layer is ``method``'s direction (x's cue -> x''s cue) fitted on the
    probing dataset's store at that layer (``store_size`` examples; None: the dataset's
    default), unless ``directions`` are given. Without
    ``layers``: every 3rd layer, the last, and the layer where that direction classifies best.
    Returns the result (``to_dict()`` is the JSON payload); writes and prints nothing.
    """
    import time

    from probes.cache.extraction import extract_dataset
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
    return CaseStudyResult(
        case=case,
        model=model.describe(),
        direction_method=None if directions else method,
        direction_accuracy=accuracy,
        pairs=[[x.pair_id, xp.pair_id] for x, xp in twins],
        config={"n_boot": n_boot, "n_perm": n_perm, "seed": seed, "layers": chosen},
        seconds=round(time.perf_counter() - start, 1),
        results=results,
    )


def run_case_study(model: LoadedModel, case: CaseStudy, **kwargs: Any) -> CaseStudyResult:
    """The former name of :func:`analyse_case_study`; it too writes nothing (``probes mediate``
    and ``probes run`` write ``results.json`` and the figures)."""
    if "out" in kwargs:
        raise ProbesError(
            "run_case_study writes no files; write its result with "
            "probes.cli.mediation.write_case_study(result, out)"
        )
    return analyse_case_study(model, case, **kwargs)
