"""Effects of a cue over twin pairs: per-twin TE, NIE, NDE and their mismatch, averaged with
percentile-bootstrap intervals (``probes.stats``) and tested with a sign-flip permutation test.

For twins ``x`` (cue A) and ``x'`` (cue B), a mediator ``M`` and a behaviour metric ``Y``:
``TE = Y(x') - Y(x)``, ``NIE = Y(x, M <- M(x')) - Y(x)``, ``NDE = Y(x', M <- M(x)) - Y(x)`` and
``mismatch = TE - (NDE + NIE)``. ``docs/mediation.md`` explains what the estimates mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from probes.errors import ProbesError
from probes.stats import bootstrap_indices, percentile_interval, sign_flip_p_value

EFFECTS: tuple[str, ...] = ("te", "nie", "nde", "mismatch")


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
