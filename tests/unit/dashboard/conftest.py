"""A planted reader bundle on the tiny Gemma: each class's steering direction is its reading
probe's own weight row, so pinning a class must raise that class's reading."""

from __future__ import annotations

import pytest
import torch

from probes.probing.linear import FittedProbe
from probes.readers.bundle import Reader, ReaderBundle, reading_suffix

PLANTED = {"dialect": ("uk", "us"), "age": ("adult", "child", "older_adult")}
READ_LAYER, CONTROL_LAYER = 2, 1


def _probe(classes: tuple[str, ...], d: int, layer: int, gen: torch.Generator) -> FittedProbe:
    rows = 1 if len(classes) == 2 else len(classes)
    return FittedProbe(
        classes=classes,
        mean=torch.zeros(d, dtype=torch.float64),
        scale=torch.ones(d, dtype=torch.float64),
        weight=torch.randn(rows, d, generator=gen, dtype=torch.float64) / d**0.5,
        bias=torch.zeros(rows, dtype=torch.float64),
        C=1.0,
        layer=layer,
        site="resid_post",
    )


def planted_bundle(model, fingerprint: str | None = None) -> ReaderBundle:
    gen = torch.Generator().manual_seed(0)
    d, n = model.d_model, model.n_layers
    readers = {}
    for name, classes in PLANTED.items():
        reading = _probe(classes, d, READ_LAYER, gen)
        control = _probe(classes, d, CONTROL_LAYER, gen)
        rows = torch.stack([reading.direction(c) for c in classes])  # [classes, d]
        readers[name] = Reader(
            attribute=name,
            dataset=name,
            dataset_hash="planted",
            classes=classes,
            suffix=reading_suffix(name),
            reading=reading,
            control=control,
            directions=rows[None].expand(n, -1, -1).contiguous(),
            typical_norms=torch.full((n,), 8.0),
            scores={"reading_accuracy": 1.0, "control_accuracy": 1.0},
        )
    return ReaderBundle(
        model_name=model.name,
        fingerprint=fingerprint or model.fingerprint,
        frame="chat",
        n_layers=n,
        readers=readers,
    )


@pytest.fixture(scope="session")
def planted(tiny_gemma):
    return planted_bundle(tiny_gemma)
