"""Mediation on tiny random-weight models with known answers: when a planted direction carries
the whole effect NIE = TE and NDE = 0; when the effect bypasses the mediator NIE = 0 and
NDE = TE; with an interaction the mismatch is the known cross term. Plus the statistics."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from probes.behavior.scoring import next_token_logprobs_at
from probes.directions import Direction
from probes.errors import ProbesError
from probes.interventions.hooks import record
from probes.mediation import (
    EffectEstimate,
    LayerMediation,
    estimate_effect,
    markdown_table,
    mediate,
    mediate_many,
    sign_flip_p_value,
    summarize,
)

# Twins of equal byte length within a pair (rotary positions then match), different across pairs.
TWINS = [
    ("I like the colour red", "I like the colour tan"),
    ("We went on holiday", "We went on weekend"),
    ("My mum said hello to me", "My mom said hello to me"),
    ("The lift is broken", "The flat is broken"),
    ("Colour me surprised", "Colour me impressed"),
]


def _unit(d: int, seed: int) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _orthogonal_pair(d: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, w = _unit(d, 1), _unit(d, 2)
    w = w - (w @ u) * u
    return u, w / w.norm()


def _log_odds_metric(model, prompts):
    """log p(token 'a') - log p(token 'b') at the last position, in small length-sorted batches."""
    a, b = (model.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("a", "b"))
    lps = next_token_logprobs_at(model, prompts, [[a, b]] * len(prompts), batch_size=3)
    return torch.stack([lp[0] - lp[1] for lp in lps]).float()


@contextmanager
def only_through(model, layer: int, u: torch.Tensor, gain: float = 300.0):
    """Plant a bottleneck: after ``layer`` every position holds a constant vector, except the
    last, which keeps only its coordinate along ``u`` (scaled). Everything downstream is then a
    function of that one number (twins have equal lengths, so positions match too)."""
    gen = torch.Generator().manual_seed(3)
    const = torch.randn(model.d_model, generator=gen)

    def hook(acts, hook):
        s = acts[:, -1] @ u.to(acts.dtype)  # batches are left-padded: the last column is last
        new = const.to(acts.dtype).expand_as(acts).clone()
        new[:, -1] = new[:, -1] + gain * s[:, None] * u.to(acts.dtype)
        return new

    with model.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.hook_out", hook)]):
        yield


def _effects(result: LayerMediation) -> dict[str, np.ndarray]:
    return {k: result.per_twin[k] for k in ("te", "nie", "nde", "mismatch")}


def test_twins_have_equal_lengths_within_pairs(tiny_model):
    for x, xp in TWINS:
        ids = [tiny_model.tokenizer(t)["input_ids"] for t in (x, xp)]
        assert len(ids[0]) == len(ids[1])


def test_effect_through_planted_direction_is_all_indirect(tiny_model):
    layer = 1
    u, _ = _orthogonal_pair(tiny_model.d_model)
    with only_through(tiny_model, layer, u):
        res = mediate(
            tiny_model, TWINS, _log_odds_metric, [layer], mediator=u, n_boot=200, n_perm=200
        )[0]
        whole = mediate(tiny_model, TWINS, _log_odds_metric, [layer], progress=False)[0]
    e = _effects(res)
    scale = np.abs(e["te"]).max()
    assert scale > 1e-2  # the planted route does carry an effect
    np.testing.assert_allclose(e["nie"], e["te"], atol=1e-5)
    np.testing.assert_allclose(e["nde"], 0.0, atol=1e-5)
    np.testing.assert_allclose(e["mismatch"], 0.0, atol=2e-5)
    assert res.rank == 1 and res.n_twins == len(TWINS)
    assert res.proportion_mediated == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(_effects(whole)["nie"], e["te"], atol=1e-5)


def test_effect_that_bypasses_the_mediator_is_all_direct(tiny_model):
    layer = 1
    u, w = _orthogonal_pair(tiny_model.d_model)
    with only_through(tiny_model, layer, u):
        res = mediate(tiny_model, TWINS, _log_odds_metric, [layer], mediator=w, progress=False)[0]
    e = _effects(res)
    assert np.abs(e["te"]).max() > 1e-2
    np.testing.assert_allclose(e["nie"], 0.0, atol=1e-5)
    np.testing.assert_allclose(e["nde"], e["te"], atol=1e-5)
    assert res.proportion_mediated == pytest.approx(0.0, abs=1e-3)


def test_last_token_residual_at_the_last_layer_mediates_everything(tiny_model):
    last = tiny_model.n_layers - 1
    pairs = [(x, xp + " and more") for x, xp in TWINS]  # unequal lengths: last token aligns
    res = mediate(tiny_model, pairs, _log_odds_metric, [0, last], progress=False)
    by_layer = {r.layer: _effects(r) for r in res}
    e = by_layer[last]
    np.testing.assert_allclose(e["nie"], e["te"], atol=1e-4)
    np.testing.assert_allclose(e["nde"], 0.0, atol=1e-4)


def test_all_positions_at_the_first_layer_mediate_everything(tiny_model):
    res = mediate(tiny_model, TWINS, _log_odds_metric, [0], positions="all", progress=False)[0]
    e = _effects(res)
    assert res.positions is None
    np.testing.assert_allclose(e["nie"], e["te"], atol=1e-4)
    np.testing.assert_allclose(e["nde"], 0.0, atol=1e-4)
    with pytest.raises(ProbesError, match="equal token length"):
        mediate(tiny_model, [("short", "longer text")], _log_odds_metric, [0], positions="all")


def test_interaction_shows_up_as_the_known_mismatch(tiny_gemma):
    """Y = s_u * s_w (coordinates of the last-token residual at one layer), mediator span(u):
    NIE = (s_u' - s_u) s_w, NDE = s_u (s_w' - s_w), mismatch = (s_u' - s_u)(s_w' - s_w)."""
    layer = 2
    u, w = _orthogonal_pair(tiny_gemma.d_model)

    def product(model, prompts):
        h = record(model, prompts, [layer], batch_size=2)[layer][:, 0].double()
        return (h @ u.double()) * (h @ w.double())

    res = mediate(tiny_gemma, TWINS, product, [layer], mediator=u[None], progress=False)[0]
    h = record(tiny_gemma, [t for pair in TWINS for t in pair], [layer])[layer][:, 0].double()
    su, sw = (h @ u.double()).numpy(), (h @ w.double()).numpy()
    su, sup, sw, swp = su[0::2], su[1::2], sw[0::2], sw[1::2]
    e = _effects(res)
    np.testing.assert_allclose(e["te"], sup * swp - su * sw, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(e["nie"], (sup - su) * sw, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(e["nde"], su * (swp - sw), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(e["mismatch"], (sup - su) * (swp - sw), atol=1e-4, rtol=1e-4)
    assert np.abs(e["mismatch"]).max() > 1e-3


def test_several_mediators_share_one_run_and_directions_need_their_layer(tiny_gemma):
    u, w = _orthogonal_pair(tiny_gemma.d_model)
    du, dw = Direction(u, layer=1), Direction(w, layer=1)
    out = mediate_many(
        tiny_gemma,
        TWINS,
        _log_odds_metric,
        {"plane": [du, dw], "residual": None, "line": {1: du}},
        [1],
        progress=False,
    )
    assert out["plane"][0].rank == 2 and out["line"][0].rank == 1
    assert out["residual"][0].rank is None
    np.testing.assert_allclose(out["plane"][0].per_twin["te"], out["residual"][0].per_twin["te"])
    with pytest.raises(ProbesError, match="no basis at layers"):
        mediate(tiny_gemma, TWINS, _log_odds_metric, [2], mediator=[du])
    with pytest.raises(ProbesError, match="shape"):
        mediate(tiny_gemma, TWINS, lambda m, p: torch.zeros(1), [1])
    with pytest.raises(ProbesError, match="width"):
        mediate(tiny_gemma, TWINS, _log_odds_metric, [1], mediator=torch.ones(3))


# --------------------------------------------------------------------------------------------
# Statistics on synthetic numbers
# --------------------------------------------------------------------------------------------


def test_constant_effects_have_a_point_interval_and_the_smallest_p():
    est = estimate_effect(np.full(12, 2.5), n_boot=500, n_perm=999, seed=0)
    assert est == EffectEstimate(2.5, 2.5, 2.5, est.p_value)
    # only the two all-same-sign flips reach |2.5|: p ~ (1 + 999 * 2 / 4096) / 1000
    assert est.p_value < 0.01


def test_sign_flip_p_value_matches_exact_enumeration():
    values = np.array([1.0, 2.0, 3.0])
    # of the 8 sign patterns, only +++ and --- give |mean| >= 2
    p = sign_flip_p_value(values, n_perm=40_000, seed=1)
    assert p == pytest.approx(2 / 8, abs=0.01)
    assert sign_flip_p_value(np.zeros(5), n_perm=100) == 1.0


def test_null_p_values_are_roughly_uniform_and_intervals_cover():
    rng = np.random.default_rng(0)
    ps, covered = [], 0
    for _ in range(200):
        sample = rng.normal(0.0, 1.0, size=30)
        est = estimate_effect(sample, n_boot=400, n_perm=400, seed=int(rng.integers(1e9)))
        ps.append(est.p_value)
        covered += est.ci_low <= 0.0 <= est.ci_high
    assert 0.01 <= np.mean(np.asarray(ps) < 0.05) <= 0.11
    assert 0.88 <= covered / 200 <= 0.99


def test_summarize_reports_the_mismatch_and_ratio_of_means():
    y_x = np.array([0.0, 1.0, 2.0, 3.0])
    y_xp = y_x + np.array([2.0, 4.0, 6.0, 8.0])  # TE
    y_x_med = y_x + np.array([1.0, 1.0, 3.0, 3.0])  # NIE
    y_xp_med = y_x + np.array([0.5, 2.0, 2.0, 4.0])  # NDE
    y_x, y_xp, y_x_med, y_xp_med = (np.tile(a, 2) for a in (y_x, y_xp, y_x_med, y_xp_med))
    r = summarize(y_x, y_xp, y_x_med, y_xp_med, layer=3, n_boot=300, n_perm=2000)
    np.testing.assert_allclose(r.per_twin["mismatch"], [0.5, 1.0, 1.0, 1.0] * 2)
    assert r.te.mean == 5.0 and r.nie.mean == 2.0 and r.nde.mean == 2.125
    assert r.mismatch.mean == pytest.approx(0.875)
    assert r.proportion_mediated == pytest.approx(0.4)
    assert r.proportion_median == pytest.approx(np.median([0.5, 0.25, 0.5, 0.375]))
    low, high = r.proportion_ci
    assert low <= 0.4 <= high
    d = r.to_dict()
    assert d["te"]["mean"] == 5.0 and d["n_twins"] == 8 and d["layer"] == 3
    assert d["per_twin"]["nie"] == [1.0, 1.0, 3.0, 3.0] * 2
    assert r.te.p_value < 0.05  # 8 positive effects: only 2 of 256 sign patterns reach the mean
    table = markdown_table([r])
    assert table.count("\n") == 2 and "+5.00" in table and "+0.40" in table


def test_zero_total_effect_gives_no_proportion():
    zeros = np.zeros(3)
    r = summarize(zeros, zeros, zeros + 1, zeros, layer=0, n_boot=50, n_perm=50)
    assert np.isnan(r.proportion_mediated)
    assert r.to_dict()["proportion_mediated"] is None
    assert "n/a" in markdown_table([r])


def test_proportion_is_not_shown_over_an_insignificant_total_effect():
    rng = np.random.default_rng(0)
    y_x = rng.normal(size=10)
    r = summarize(y_x, y_x + rng.normal(0, 1, 10), y_x + 0.1, y_x, layer=0, n_perm=500)
    assert r.te.p_value >= 0.05
    assert "n/a (TE n.s.)" in markdown_table([r])


# --------------------------------------------------------------------------------------------
# Command line: bad input is a one-line ProbesError before any model is loaded
# --------------------------------------------------------------------------------------------


def _parse(argv):
    import argparse

    from probes.cli.mediation import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["mediate", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--direction", "no_such_thing"], "neither a method"),
        (["--positions", "middle"], "--positions"),
        (["--metric", "accuracy"], "--metric"),
    ],
)
def test_cli_bad_input_is_a_probes_error(argv, message, tmp_path):
    from probes.cli.mediation import run_from_args

    args = _parse(["--dataset", "dialect", "--out", str(tmp_path), "--model", "nope", *argv])
    with pytest.raises(ProbesError, match=message):
        run_from_args(args)


def test_cli_names_case_studies_by_name_or_behaviour_set(tmp_path):
    from probes.cli.mediation import run_from_args
    from probes.mediation import case_study

    assert case_study("belief") is case_study("echo_chamber")
    args = _parse(["--dataset", "gender", "--out", str(tmp_path), "--model", "nope"])
    with pytest.raises(ProbesError, match="no case study 'gender'"):
        run_from_args(args)


def test_cli_reads_saved_directions(tmp_path):
    from probes.cli.mediation import _directions

    Direction(torch.ones(4), layer=2).save(tmp_path / "d")
    method, loaded = _directions([str(tmp_path / "d.json")])
    assert method is None and loaded[0].layer == 2
    assert _directions(["twin_pca"]) == ("twin_pca", [])


def test_case_study_script_exits_2_on_bad_input(capsys):
    from probes.cli.mediation import case_study_main

    with pytest.raises(SystemExit) as info:  # refused by argparse, before the model loads
        case_study_main("dialect", "test", ["--pairs", "0", "--model", "nope"])
    assert info.value.code == 2
    assert "--pairs" in capsys.readouterr().err


def test_cli_refuses_zero_pairs_while_parsing():
    with pytest.raises(SystemExit) as info:
        _parse(["--dataset", "dialect", "--out", "x", "--model", "nope", "--pairs", "0"])
    assert info.value.code == 2
