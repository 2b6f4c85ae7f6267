"""Attribute directions from an activation store: mean difference, probe weights, twin PCA, LEACE.

A :class:`Direction` is one vector at one (layer, site) that points from a source label towards
a target label, with the layer's typical residual norm so that steering strengths are in units of
that norm and compare across layers and methods. An :class:`Eraser` is a fitted LEACE projection
(Belrose et al. 2023) that removes every linearly available trace of a concept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from probes.artifacts import artifact_fields, load_artifact, save_artifact
from probes.cache.store import ActivationStore
from probes.errors import ProbesError

METHODS = ("mean_diff", "probe", "twin_pca")
DIRECTION_FORMAT = "probes-direction"
ERASER_FORMAT = "probes-eraser"


@dataclass(frozen=True, eq=False)
class Direction:
    """A steering or attribute direction: ``vector`` at ``layer``/``site``, source -> target."""

    vector: Float[Tensor, " d_model"]
    layer: int
    site: str = "resid_post"
    method: str = "custom"
    attribute: str = ""
    source: str = ""
    target: str = ""
    typical_norm: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def unit(self) -> Float[Tensor, " d_model"]:
        """The vector scaled to length one."""
        return self.vector / self.vector.norm().clamp_min(1e-12)

    def scaled(self, strength: float) -> Float[Tensor, " d_model"]:
        """What steering adds: ``strength`` x the typical residual norm along the unit vector."""
        return float(strength) * self.typical_norm * self.unit

    def reversed(self) -> Direction:
        """The same direction pointing from target back to source."""
        return replace(self, vector=-self.vector, source=self.target, target=self.source)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        meta = {
            "layer": self.layer,
            "site": self.site,
            "method": self.method,
            "attribute": self.attribute,
            "source": self.source,
            "target": self.target,
            "typical_norm": self.typical_norm,
            "meta": self.meta,
        }
        return save_artifact(path, DIRECTION_FORMAT, 1, {"vector": self.vector}, meta)

    def to_gguf(self, path: str | Path, strength: float, model: Any) -> Path:
        """Write a llama.cpp control vector whose ``--control-vector-scaled FILE 1.0`` applies
        ``steer(model, self, strength)``; ``model`` is a LoadedModel or a
        ``probes.vectors.ModelShape`` (see ``probes/vectors/files.py`` for the convention)."""
        from probes.vectors.files import write_control_vector

        return write_control_vector(path, [self], strength, model, "gguf")

    @classmethod
    def load(cls, path: str | Path) -> Direction:
        tensors, meta = load_artifact(path, DIRECTION_FORMAT, 1)
        with artifact_fields(path):
            return cls.from_fields(tensors["vector"], meta)

    @classmethod
    def from_fields(cls, vector: Tensor, fields: dict[str, Any]) -> Direction:
        """A direction from its vector and its saved fields (layer, site, method, ...)."""
        return cls(
            vector=vector,
            layer=int(fields["layer"]),
            site=str(fields["site"]),
            method=str(fields["method"]),
            attribute=str(fields["attribute"]),
            source=str(fields["source"]),
            target=str(fields["target"]),
            typical_norm=float(fields["typical_norm"]),
            meta=dict(fields.get("meta") or {}),
        )


@dataclass(frozen=True, eq=False)
class Eraser:
    """A LEACE eraser at one (layer, site): ``x - ((x - bias) @ proj_right.T) @ proj_left.T``."""

    proj_left: Float[Tensor, "d_model k"]
    proj_right: Float[Tensor, "k d_model"]
    bias: Float[Tensor, " d_model"]
    layer: int
    site: str = "resid_post"
    attribute: str = ""

    def __call__(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        left = self.proj_left.to(x.device, x.dtype)
        right = self.proj_right.to(x.device, x.dtype)
        return x - ((x - self.bias.to(x.device, x.dtype)) @ right.T) @ left.T

    def save(self, path: str | Path) -> tuple[Path, Path]:
        tensors = {"proj_left": self.proj_left, "proj_right": self.proj_right, "bias": self.bias}
        meta = {"layer": self.layer, "site": self.site, "attribute": self.attribute}
        return save_artifact(path, ERASER_FORMAT, 1, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> Eraser:
        tensors, meta = load_artifact(path, ERASER_FORMAT, 1)
        with artifact_fields(path):
            layer, site, attribute = int(meta["layer"]), str(meta["site"]), str(meta["attribute"])
            return cls(**tensors, layer=layer, site=site, attribute=attribute)


# --------------------------------------------------------------------------------------------


def typical_norm(acts: Float[Tensor, "n d_model"]) -> float:
    """The median L2 norm of the rows: the layer's typical residual norm at the stored position."""
    return float(acts.float().norm(dim=-1).median())


def _class_rows(store: ActivationStore, source: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray([str(label) for label in store.labels])
    src, tgt = labels == str(source), labels == str(target)
    if not src.any() or not tgt.any():
        found = sorted(set(labels.tolist()))
        raise ProbesError(f"labels {source!r} and {target!r} must both occur; found {found}")
    return src, tgt


def _twin_differences(
    store: ActivationStore, acts: Tensor, source: str, target: str
) -> Float[Tensor, "pairs d_model"]:
    """target-minus-source activation for every twin pair that has both labels."""
    by_pair: dict[str, dict[str, int]] = defaultdict(dict)
    for row, (pair, label) in enumerate(zip(store.column("pair_id"), store.labels, strict=True)):
        if pair:
            by_pair[str(pair)][str(label)] = row
    pairs = [(p[source], p[target]) for p in by_pair.values() if source in p and target in p]
    if len(pairs) < 2:
        raise ProbesError(
            f"twin PCA needs at least 2 twin pairs with labels {source!r} and {target!r}; "
            f"the store has {len(pairs)}"
        )
    src, tgt = (torch.as_tensor(idx) for idx in zip(*pairs, strict=True))
    return acts[tgt] - acts[src]


def fit_direction(
    store: ActivationStore,
    layer: int,
    method: str,
    source: str,
    target: str,
    *,
    site: str = "resid_post",
    C: float = 1.0,
) -> Direction:
    """One direction at ``layer`` from ``source`` towards ``target`` by ``method``.

    ``mean_diff``: mean(target) - mean(source) (CAA-style); ``probe``: the logistic probe's
    weight row of ``target`` in raw activation space, fitted on the two classes; ``twin_pca``:
    the first right singular vector of the uncentred target-minus-source twin differences,
    signed to agree with their mean.
    """
    if method not in METHODS:
        raise ProbesError(f"unknown direction method {method!r}; choose from {', '.join(METHODS)}")
    acts = store.read([layer], site, torch.float64)[0]  # from the shards; nothing cached
    src, tgt = _class_rows(store, source, target)
    diff = acts[torch.as_tensor(tgt)].mean(0) - acts[torch.as_tensor(src)].mean(0)
    if method == "mean_diff":
        vector = diff
    elif method == "probe":
        from probes.probing.linear import LinearProbe

        keep = src | tgt
        labels = np.asarray([str(x) for x in store.labels])[keep]
        probe = LinearProbe(C=C).fit(acts[torch.as_tensor(keep)].float(), labels)
        vector = probe.fitted_.direction(str(target), dtype=torch.float64)
    else:
        diffs = _twin_differences(store, acts, str(source), str(target))
        vector = torch.linalg.svd(diffs, full_matrices=False).Vh[0]
        if float(vector @ diffs.mean(0)) < 0:
            vector = -vector
    return Direction(
        vector=vector.float(),
        layer=int(layer),
        site=site,
        method=method,
        attribute=str(store.column("attribute")[0] or ""),
        source=str(source),
        target=str(target),
        typical_norm=typical_norm(acts),
        meta={"store": store.path.name, "position": store.request.get("position")},
    )


def random_direction(like: Direction, seed: int = 0) -> Direction:
    """A Gaussian random direction with the same norm, layer and typical norm: the control."""
    gen = torch.Generator().manual_seed(seed)
    vector = torch.randn(like.vector.shape[-1], generator=gen, dtype=torch.float64)
    vector = vector / vector.norm() * like.vector.double().norm()
    method = f"random({like.method})"
    return replace(like, vector=vector.float(), method=method, meta={"seed": seed})


def fit_eraser(
    store: ActivationStore,
    layer: int,
    *,
    site: str = "resid_post",
    attribute: str = "",
    rows: Sequence[int] | None = None,
) -> Eraser:
    """Fit LEACE (via ``concept-erasure``) on the store's activations and labels at ``layer``
    (only on ``rows`` if given, e.g. to test the eraser on rows it never saw)."""
    from concept_erasure import LeaceFitter

    keep = list(range(len(store))) if rows is None else [int(r) for r in rows]
    labels = [str(store.labels[r]) for r in keep]
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ProbesError("LEACE needs at least two label values")
    x = store.read([layer], site, torch.float64)[0]  # from the shards; nothing cached
    if rows is not None:
        x = x[torch.as_tensor(keep)]
    z = torch.zeros(len(labels), len(classes), dtype=torch.float64)
    z[torch.arange(len(labels)), torch.as_tensor([classes.index(c) for c in labels])] = 1.0
    eraser = LeaceFitter.fit(x, z).eraser
    bias = eraser.bias if eraser.bias is not None else torch.zeros(x.shape[1], dtype=x.dtype)
    return Eraser(
        proj_left=eraser.proj_left.float(),
        proj_right=eraser.proj_right.float(),
        bias=bias.float(),
        layer=int(layer),
        site=site,
        attribute=attribute or str(store.column("attribute")[0] or ""),
    )


def fit_directions(
    store: ActivationStore,
    layers: Sequence[int],
    method: str,
    source: str,
    target: str,
    *,
    site: str = "resid_post",
) -> list[Direction]:
    """One direction per layer, same method and labels."""
    return [fit_direction(store, layer, method, source, target, site=site) for layer in layers]
