"""Directions from a synthetic store: each method recovers a planted direction."""

from __future__ import annotations

import pytest
import torch

from probes.cache.store import write_store
from probes.directions import Direction, fit_direction, random_direction
from probes.errors import ProbesError

D = 16


@pytest.fixture()
def planted_store(tmp_path):
    gen = torch.Generator().manual_seed(0)
    axis = torch.zeros(D)
    axis[3] = 1.0
    base = torch.randn(40, D, generator=gen) * 0.3 + 5.0  # uncentred: PCA must not need centring
    us, uk = base, base + 2.0 * axis
    acts = torch.cat([us, uk])[:, None]  # [n, 1 layer, d]
    table = [
        {"label": lab, "pair_id": f"p{i}", "attribute": "dialect", "text": f"{lab} {i}"}
        for lab in ("us", "uk")
        for i in range(40)
    ]
    return write_store(tmp_path / "s", {"resid_post": acts}, table, layers=[4]), axis


@pytest.mark.parametrize("method", ["mean_diff", "probe", "twin_pca"])
def test_methods_recover_the_planted_axis_pointing_to_target(planted_store, method):
    store, axis = planted_store
    d = fit_direction(store, 4, method, source="us", target="uk")
    # a probe also leans on noise dimensions that help separate the training rows
    assert float(d.unit @ axis) > (0.85 if method == "probe" else 0.95)
    assert (d.layer, d.source, d.target, d.method) == (4, "us", "uk", method)
    assert d.attribute == "dialect"
    assert d.typical_norm == pytest.approx(float(store.get(4).norm(dim=-1).median()))
    back = fit_direction(store, 4, method, source="uk", target="us")
    assert float(back.unit @ axis) < -0.85


def test_scaled_is_in_units_of_typical_norm(planted_store):
    d = fit_direction(planted_store[0], 4, "mean_diff", "us", "uk")
    assert float(d.scaled(0.5).norm()) == pytest.approx(0.5 * d.typical_norm, rel=1e-5)


def test_random_control_has_same_norm_and_is_far_from_it(planted_store):
    d = fit_direction(planted_store[0], 4, "mean_diff", "us", "uk")
    r = random_direction(d, seed=3)
    assert float(r.vector.norm()) == pytest.approx(float(d.vector.norm()), rel=1e-5)
    assert abs(float(r.unit @ d.unit)) < 0.8
    assert r.typical_norm == d.typical_norm and r.layer == d.layer


def test_save_load_roundtrip_and_corruption(planted_store, tmp_path):
    d = fit_direction(planted_store[0], 4, "twin_pca", "us", "uk")
    d.save(tmp_path / "dir")
    back = Direction.load(tmp_path / "dir.json")
    torch.testing.assert_close(back.vector, d.vector)
    assert (back.layer, back.method, back.typical_norm) == (d.layer, d.method, d.typical_norm)
    (tmp_path / "dir.safetensors").write_bytes(b"junk")
    with pytest.raises(ProbesError, match="checksum"):
        Direction.load(tmp_path / "dir")


def test_bad_labels_and_methods_are_clear_errors(planted_store):
    store = planted_store[0]
    with pytest.raises(ProbesError, match="must both occur"):
        fit_direction(store, 4, "mean_diff", "us", "gb")
    with pytest.raises(ProbesError, match="unknown direction method"):
        fit_direction(store, 4, "magic", "us", "uk")


def test_directions_read_the_layer_from_the_shards_and_cache_nothing(planted_store):
    store, _ = planted_store
    for method in ("mean_diff", "probe", "twin_pca"):
        fit_direction(store, 4, method, source="us", target="uk")
    assert not store._tensors  # a store larger than memory does not fill up layer by layer
