"""What the persona audit returns: :class:`AuditResult`, with ``to_dict()`` (the JSON-able
structure of results.json and the stage cache) and ``from_dict()`` (its inverse)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PB_KEYS = ("pb", "pb_null", "by_group", "permutation_p", "n_identities")


@dataclass
class PBSummary:
    """PB over the identities with its interval, the item-noise null, PB per group and the
    permutation tests (``bias.pb_summary``)."""

    pb: dict[str, float]
    pb_null: dict[str, float]
    by_group: dict[str, dict[str, Any]]
    permutation_p: dict[str, float]
    n_identities: int

    def to_dict(self) -> dict[str, Any]:
        """The dict ``pb_summary`` returns, keys in the same order."""
        return {key: getattr(self, key) for key in PB_KEYS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PBSummary:
        """The inverse of :meth:`to_dict` (extra keys are ignored)."""
        return cls(**{key: data[key] for key in PB_KEYS})


@dataclass
class MitigationResult:
    """The audit re-run with the persona directions mean-ablated (``mitigation.mitigate``)."""

    method: str
    layers: list[int]
    n_directions: int
    pb_after: PBSummary
    pb_change: dict[str, float]
    personas_after: list[dict[str, Any]]
    tier1_after: dict[str, Any]
    utility_before: float
    utility_after: float
    utility_change: dict[str, float]
    baseline_utility_before: float
    baseline_utility_after: float
    baseline_refusal_log_odds_before: float
    baseline_refusal_log_odds_after: float
    neutral_kl: float
    scores_after: dict[str, Any]
    readout_after: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ``readout_after`` only when the read-out ran."""
        out: dict[str, Any] = {}
        for key in MITIGATION_KEYS:
            out[key] = getattr(self, key)
        out["pb_after"] = self.pb_after.to_dict()
        if self.readout_after is not None:
            out["readout_after"] = self.readout_after
        out["seconds"] = self.seconds
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MitigationResult:
        """The inverse of :meth:`to_dict`."""
        fields = {key: data[key] for key in MITIGATION_KEYS}
        fields["pb_after"] = PBSummary.from_dict(data["pb_after"])
        return cls(**fields, readout_after=data.get("readout_after"), seconds=data["seconds"])


MITIGATION_KEYS = (
    "method",
    "layers",
    "n_directions",
    "pb_after",
    "pb_change",
    "personas_after",
    "tier1_after",
    "utility_before",
    "utility_after",
    "utility_change",
    "baseline_utility_before",
    "baseline_utility_after",
    "baseline_refusal_log_odds_before",
    "baseline_refusal_log_odds_after",
    "neutral_kl",
    "scores_after",
)


@dataclass
class AuditResult:
    """The persona audit of one model (``run.run_audit``).

    ``figures``: the figure stems written for it (by the caller, ``viz.audit``), empty until
    then; ``seconds``: wall time per part.
    """

    model: str
    n_utility_items: int
    n_safety_items: int
    max_items: int | None
    n_personas: int
    policy: dict[str, Any]
    personas: list[dict[str, Any]]
    bias: PBSummary
    tier1: dict[str, Any]
    tier2: list[dict[str, Any]]
    scores: dict[str, Any]
    tier3: dict[str, Any]
    readout: dict[str, Any] | None = None
    mitigation: MitigationResult | None = None
    figures: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def pb(self) -> dict[str, float]:
        """PB over the identities with its 95% interval."""
        return self.bias.pb

    @property
    def flagged(self) -> list[str]:
        """The identities tier 1 flags."""
        return list(self.tier1["flagged"])

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict of results.json, keys in the order ``run_audit`` always wrote."""
        out: dict[str, Any] = {
            "model": self.model,
            "n_utility_items": self.n_utility_items,
            "n_safety_items": self.n_safety_items,
            "max_items": self.max_items,
            "n_personas": self.n_personas,
            "policy": self.policy,
            "personas": self.personas,
            **self.bias.to_dict(),
            "tier1": self.tier1,
            "tier2": self.tier2,
            "scores": self.scores,
            "tier3": self.tier3,
        }
        if self.readout is not None:
            out["readout"] = self.readout
        if self.mitigation is not None:
            out["mitigation"] = self.mitigation.to_dict()
        out["figures"] = list(self.figures)
        out["seconds"] = self.seconds
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        """The inverse of :meth:`to_dict` (e.g. a cached stage result, or results.json)."""
        mitigation = data.get("mitigation")
        return cls(
            model=data["model"],
            n_utility_items=data["n_utility_items"],
            n_safety_items=data["n_safety_items"],
            max_items=data["max_items"],
            n_personas=data["n_personas"],
            policy=data["policy"],
            personas=data["personas"],
            bias=PBSummary.from_dict(data),
            tier1=data["tier1"],
            tier2=data["tier2"],
            scores=data["scores"],
            tier3=data["tier3"],
            readout=data.get("readout"),
            mitigation=MitigationResult.from_dict(mitigation) if mitigation else None,
            figures=list(data.get("figures", [])),
            seconds=data.get("seconds", {}),
        )
