"""A reader bundle: per attribute, the reading probe, the control probe and a steering direction
per class, fitted for one model, in one ``readers.safetensors`` + ``readers.json`` pair.

The reading probe reads at the last token of TalkTuner's suffix (" I think the {attribute} of
this user is") appended where the assistant would speak; the control probe reads the last
prompt token itself. Both sit at the layer chosen on held-out template families. The steering
directions are one-vs-rest mean differences at the last prompt token, one per class and layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from probes.artifacts import load_artifact, save_artifact
from probes.directions import Direction
from probes.errors import ProbesError
from probes.probing.linear import FittedProbe

BUNDLE_FORMAT = "probes-readers"
BUNDLE_VERSION = 1
BUNDLE_NAME = "readers"  # readers.safetensors + readers.json inside a bundle folder
_PROBE_TENSORS = ("mean", "scale", "weight", "bias")


def reading_suffix(attribute: str) -> str:
    """TalkTuner's read-out suffix for ``attribute`` (the same text ``probes run`` uses)."""
    return f" I think the {attribute.replace('_', ' ')} of this user is"


@dataclass(frozen=True, eq=False)
class Reader:
    """One attribute's probes and steering directions (``directions[layer, class]``)."""

    attribute: str
    dataset: str
    dataset_hash: str
    classes: tuple[str, ...]
    suffix: str
    reading: FittedProbe
    control: FittedProbe
    directions: Float[Tensor, "layers classes d_model"]
    typical_norms: Float[Tensor, " layers"]
    scores: dict[str, Any] = field(default_factory=dict)  # held-out accuracies and chance levels

    def direction(self, cls: str, layer: int) -> Direction:
        """The steering direction towards ``cls`` (away from the other classes) at ``layer``."""
        if cls not in self.classes:
            raise ProbesError(
                f"{self.attribute} has no class {cls!r}; it has {', '.join(self.classes)}"
            )
        if not 0 <= layer < self.directions.shape[0]:
            raise ProbesError(f"layer {layer} is out of range (0-{self.directions.shape[0] - 1})")
        return Direction(
            vector=self.directions[layer, self.classes.index(cls)].float(),
            layer=int(layer),
            method="mean_diff_one_vs_rest",
            attribute=self.attribute,
            source=f"not {cls}",
            target=cls,
            typical_norm=float(self.typical_norms[layer]),
        )

    def band(self, cls: str, layers: Sequence[int]) -> list[Direction]:
        """The class's directions over a band of layers, for ``steer``."""
        return [self.direction(cls, layer) for layer in layers]


@dataclass(frozen=True, eq=False)
class ReaderBundle:
    """Readers for one model (by weights fingerprint) and one prompt frame."""

    model_name: str
    fingerprint: str
    frame: str
    n_layers: int
    readers: dict[str, Reader]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layers_needed(self) -> int:
        """The highest layer any probe reads (a reading pass can stop after it)."""
        return max(max(r.reading.layer or 0, r.control.layer or 0) for r in self.readers.values())

    def check_model(self, fingerprint: str, name: str = "") -> None:
        """Refuse a bundle fitted on other weights, naming both fingerprints."""
        if fingerprint != self.fingerprint:
            raise ProbesError(
                f"the reader bundle was fitted on {self.model_name} (fingerprint "
                f"{self.fingerprint}), not on {name or 'this model'} (fingerprint {fingerprint}); "
                "fit one with `probes readers train --model SPEC --out DIR`"
            )

    def summary(self) -> list[dict[str, Any]]:
        """One JSON-able row per attribute: classes, layers and held-out accuracies."""
        return [
            {
                "attribute": r.attribute,
                "classes": list(r.classes),
                "reading_layer": r.reading.layer,
                "control_layer": r.control.layer,
                **r.scores,
            }
            for r in self.readers.values()
        ]

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``folder/readers.safetensors`` and ``folder/readers.json``, each atomically."""
        tensors: dict[str, Tensor] = {}
        entries = []
        for name, r in self.readers.items():
            for kind, probe in (("reading", r.reading), ("control", r.control)):
                for t in _PROBE_TENSORS:
                    tensors[f"{name}.{kind}.{t}"] = getattr(probe, t)
            tensors[f"{name}.directions"] = r.directions
            tensors[f"{name}.typical_norms"] = r.typical_norms
            entries.append(
                {
                    "attribute": r.attribute,
                    "dataset": r.dataset,
                    "dataset_hash": r.dataset_hash,
                    "classes": list(r.classes),
                    "suffix": r.suffix,
                    "reading_layer": r.reading.layer,
                    "control_layer": r.control.layer,
                    "C": r.reading.C,
                    "scores": r.scores,
                }
            )
        meta = {
            "model": {"name": self.model_name, "fingerprint": self.fingerprint},
            "frame": self.frame,
            "n_layers": self.n_layers,
            "readers": entries,
            "meta": self.meta,
        }
        return save_artifact(
            Path(folder) / BUNDLE_NAME, BUNDLE_FORMAT, BUNDLE_VERSION, tensors, meta
        )

    @classmethod
    def load(cls, folder: str | Path) -> ReaderBundle:
        """Read a bundle folder (or its ``readers.json`` path); never unpickles anything."""
        path = Path(folder)
        if path.is_dir():
            path = path / BUNDLE_NAME
        if not path.with_suffix(".json").is_file() and not Path(f"{path}.json").is_file():
            raise ProbesError(f"{folder} holds no reader bundle (no {BUNDLE_NAME}.json)")
        tensors, meta = load_artifact(path, BUNDLE_FORMAT, BUNDLE_VERSION)
        try:
            readers = {e["attribute"]: _reader(e, tensors) for e in meta["readers"]}
            return cls(
                model_name=str(meta["model"]["name"]),
                fingerprint=str(meta["model"]["fingerprint"]),
                frame=str(meta["frame"]),
                n_layers=int(meta["n_layers"]),
                readers=readers,
                meta=dict(meta.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProbesError(f"{path}.json is not a complete reader bundle ({exc!r})") from exc


def _reader(entry: dict[str, Any], tensors: dict[str, Tensor]) -> Reader:
    name = entry["attribute"]
    classes = tuple(entry["classes"])

    def probe(kind: str) -> FittedProbe:
        return FittedProbe(
            classes=classes,
            **{t: tensors[f"{name}.{kind}.{t}"] for t in _PROBE_TENSORS},
            C=float(entry["C"]),
            layer=int(entry[f"{kind}_layer"]),
            site="resid_post",
            attribute=name,
        )

    return Reader(
        attribute=name,
        dataset=entry["dataset"],
        dataset_hash=entry["dataset_hash"],
        classes=classes,
        suffix=entry["suffix"],
        reading=probe("reading"),
        control=probe("control"),
        directions=tensors[f"{name}.directions"].float(),
        typical_norms=tensors[f"{name}.typical_norms"].float(),
        scores=dict(entry.get("scores") or {}),
    )
