"""The one cue table: per behaviour attribute, its probe dataset and which cue raises the
positive answer set (the twin item under that cue should score higher)."""

from __future__ import annotations

from dataclasses import dataclass

from probes.errors import DatasetError


@dataclass(frozen=True)
class AttributeCues:
    """A behaviour attribute's cues: steering goes from ``lowering`` towards ``raising``."""

    attribute: str
    dataset: str  # the built-in probe dataset whose labels are these cues
    lowering: str  # the cue under which the positive answer set is the less likely one
    raising: str  # the cue under which it is the more likely one


CUES: dict[str, AttributeCues] = {
    "dialect": AttributeCues("dialect", "dialect_us_uk", lowering="us", raising="uk"),
    "belief": AttributeCues("belief", "belief", lowering="false", raising="true"),
    "proficiency": AttributeCues(
        "proficiency", "proficiency", lowering="non_native", raising="native"
    ),
}

STEERABLE: tuple[str, ...] = ("dialect", "belief")
"""Attributes whose answer sets are two-sided, so a direction between the cues can steer them."""


def cues_for(attribute: str, *, purpose: str = "this", allowed: tuple[str, ...] | None = None):
    """The cue table entry for ``attribute``; a one-line error names the attributes that work."""
    names = allowed if allowed is not None else tuple(CUES)
    if attribute not in names:
        raise DatasetError(f"{purpose} needs a behaviour attribute: {', '.join(names)}")
    return CUES[attribute]
