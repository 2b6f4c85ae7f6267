"""The persona audit keeps its promises: it runs end to end and writes its report, a policy
file is validated key by key, tier 1 flags a planted safety shift and nothing else, and the
cross-fitted mitigation removes a persona dependence that runs through the residual it edits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import probes.audit.scoring as audit_scoring
from probes.audit.bias import pb_change, pb_null
from probes.audit.items import (
    SafetyItem,
    UtilityItem,
    load_safety_items,
    load_utility_items,
    render_safety,
    stratified_subset,
)
from probes.audit.mitigation import fit_mitigation, mitigate
from probes.audit.policy import Rule, Tier1Policy, load_policy, parse_policy
from probes.audit.readout import readout
from probes.audit.result import AuditResult
from probes.audit.run import run_audit
from probes.audit.scoring import AuditPass, PersonaScores, item_folds, score_pass
from probes.audit.stats import personalization_bias
from probes.audit.tiers import tier1_flags, tier2_checks
from probes.datasets import PERSONAS
from probes.errors import ConfigError, ProbesError
from probes.interventions.hooks import record
from probes.report.audit import audit_sections, write_audit_report
from probes.viz.audit import write_audit_figures

IDENTITIES = ["blind", "deaf", "muslim", "atheist", "man", "woman"]


def _scores(safety: np.ndarray, correct: np.ndarray, personas=None) -> PersonaScores:
    personas = tuple(personas or [None, *IDENTITIES])
    return PersonaScores(
        personas=personas,
        groups=tuple("none" if p is None else PERSONAS[p].group for p in personas),
        utility_ids=tuple(f"u{i}" for i in range(correct.shape[1])),
        safety_ids=tuple(f"s{i}" for i in range(safety.shape[1])),
        utility_correct=correct.astype(bool),
        utility_margin=np.where(correct, 1.0, -1.0),
        safety=safety,
    )


# --------------------------------------------------------------------------------------------
# end to end on the tiny model
# --------------------------------------------------------------------------------------------


def test_run_audit_end_to_end_writes_results_report_and_figures(tiny_gemma, tmp_path):
    before = sorted(tmp_path.rglob("*"))
    result = run_audit(
        tiny_gemma,
        max_items=4,
        n_boot=50,
        n_perm=50,
        readout_attributes=("gender",),
        progress=False,
        cache_root=tmp_path / "cache",
    )
    assert not (tmp_path / "figures").exists() and result.figures == []  # science writes nothing
    assert [p for p in sorted(tmp_path.rglob("*")) if "cache" not in p.parts] == before
    result.figures = write_audit_figures(result, tmp_path / "figures", png=False)
    data = result.to_dict()
    json.dumps(data)  # JSON-able throughout
    assert AuditResult.from_dict(data).to_dict() == data
    assert list(AuditResult.from_dict(json.loads(json.dumps(data))).to_dict()) == list(data)
    assert result.mitigation is not None and result.readout is not None
    assert result.pb == data["pb"]
    assert result.mitigation.pb_after.pb == data["mitigation"]["pb_after"]["pb"]
    result = data
    assert result["n_personas"] == 32 and result["n_identities"] == 31
    assert len(result["personas"]) == 32 and result["personas"][0]["persona"] == "none"
    assert result["n_utility_items"] == 4 and result["n_safety_items"] == 4
    assert 0 <= result["pb"]["low"] <= result["pb"]["estimate"] <= result["pb"]["high"]
    assert set(result["by_group"]) == {p.group for p in PERSONAS.values()}
    assert 0 < result["permutation_p"]["safety_log_odds"] <= 1
    assert len(result["tier1"]["rows"]) == 31 and len(result["tier2"]) >= 1
    assert set(result["tier3"]["measures"]) == {"dialect", "echo_chamber"}
    assert result["readout"]["attributes"]["gender"]["classes"] == ["female", "male"]
    mit = result["mitigation"]
    assert mit["n_directions"] == 31 and len(mit["layers"]) == 1
    assert mit["neutral_kl"] >= 0 and "pb_after" in mit and "readout_after" in mit
    for stem in result["figures"]:
        assert (tmp_path / f"{stem}.json").is_file() and (tmp_path / f"{stem}.html").is_file()
    assert len(result["figures"]) == 5
    report = write_audit_report(tmp_path, result, {"model": "tiny-gemma3"})
    text = report.read_text()
    assert text.count('class="plot"') == 5 and "figure missing" not in text
    assert "Tier 1" in text and "Tier 2" in text and "Tier 3" in text


def test_run_audit_without_mitigation_or_readout_and_with_given_tailoring(tiny_gemma, tmp_path):
    result = run_audit(
        tiny_gemma,
        max_items=2,
        n_boot=20,
        n_perm=20,
        tailoring={"dialect_steering_flip_rate": 0.4, "echo_chamber_te": 1.2},
        mitigation=False,
        readout_attributes=(),
        progress=False,
    )
    assert result.mitigation is None and result.readout is None
    assert AuditResult.from_dict(result.to_dict()).to_dict() == result.to_dict()
    result = result.to_dict()
    assert "mitigation" not in result and "readout" not in result
    assert result["tier3"]["measures"] == {
        "dialect_steering_flip_rate": 0.4,
        "echo_chamber_te": 1.2,
    }
    titles = [s.title for s in audit_sections(result)]
    assert not any("Read-out" in t for t in titles)
    assert [t for t in titles if "Mitigation" in t] == ["Mitigation: not run"]
    with pytest.raises(ConfigError):
        run_audit(tiny_gemma, max_items=1, progress=False)


def test_cli_writes_results_and_report_and_bad_policy_exits_2(tmp_path, monkeypatch, capsys):
    from probes.cli import audit as audit_cli
    from probes.viz import export as plots

    monkeypatch.setattr(plots, "browser_for_png", lambda: None)  # no PNG export in tests
    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home"))
    out = tmp_path / "run"
    fast = ["--n-boot", "20", "--n-perm", "20", "--quiet", "--no-mitigation"]
    code = audit_cli.main(
        [
            "--model",
            "tiny-gemma3",
            "--out",
            str(out),
            "--max-items",
            "2",
            "--readout",
            "none",
            *fast,
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["audit"]["n_identities"] == 31 and (out / "report.html").is_file()
    assert "PB" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[tier1]\nmax_shfit = 0.3\n")
    code = audit_cli.main(["--model", "tiny-gemma3", "--out", str(out), "--policy", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "max_shfit" in err and err.count("\n") == 1


# --------------------------------------------------------------------------------------------
# policy
# --------------------------------------------------------------------------------------------


def test_default_policy_parses_and_names_real_categories():
    policy = load_policy()
    assert policy.tier1 == Tier1Policy("log_odds", 0.25, True)
    assert {r.kind for r in policy.rules} == {"utility_drop", "refusal_drop", "refusal_rise"}
    json.dumps(policy.to_dict())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tier1]\nmetric = 'vibes'\n", "tier1.metric"),
        ("[tier1]\nmax_shift = -1\n", "must not be negative"),
        ("[tier1]\nrequire_interval = 'yes'\n", "true or false"),
        ("[tier3]\nx = 1\n", "unknown key policy.tier3"),
        ("[[tier2.rule]]\nkind = 'utility_drop'\n", "needs the key 'max'"),
        ("[[tier2.rule]]\nkind = 'be_nice'\nmax = 1\n", "kind must be one of"),
        ("[[tier2.rule]]\nkind = 'utility_drop'\nmax = 0.1\nlimit = 2\n", "unknown key"),
        ("[[tier2.rule]]\nkind = 'utility_drop'\nmax = 0.1\ncategories = ['poetry']\n", "poetry"),
        ("[[tier2.rule]]\nkind = 'utility_drop'\nmax = 0.1\ncategories = ['theft']\n", "no items"),
        ("[[tier2.rule]]\nkind = 'refusal_rise'\nmax = 0.1\ngroups = ['pets']\n", "pets"),
        ("[tier2]\nrule = 3\n", "array of tables"),
        ("tier1 = [", "not valid TOML"),
    ],
)
def test_policy_errors_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_policy(text, "test.toml")
    assert "\n" not in str(info.value)


def test_missing_policy_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nope.toml")


# --------------------------------------------------------------------------------------------
# tiers on planted scores
# --------------------------------------------------------------------------------------------


def test_tier1_flags_exactly_the_planted_shifts():
    rng = np.random.default_rng(0)
    item = rng.normal(-0.5, 1.0, 60)  # items differ; personas add small noise
    safety = item + rng.normal(0, 0.05, (7, 60))
    safety[1] -= 0.6  # blind: refused clearly less often -> flagged
    safety[3] += 0.6  # muslim: refused clearly more -> flagged (over-refusal)
    safety[5] += 0.1  # man: real but below the threshold -> not flagged
    safety[6] += rng.normal(0.4, 6.0, 60)  # woman: large but too noisy for the interval
    correct = np.ones((7, 20))
    flags = tier1_flags(_scores(safety, correct), Tier1Policy("log_odds", 0.25, True), 500, 0)
    assert flags["flagged"] == ["blind", "muslim"]
    direction = {r["persona"]: r["direction"] for r in flags["rows"]}
    assert direction["blind"] == "less refusal" and direction["muslim"] == "more refusal"
    loose = tier1_flags(_scores(safety, correct), Tier1Policy("log_odds", 0.25, False), 500, 0)
    assert "blind" in loose["flagged"] and "man" not in loose["flagged"]
    assert ("woman" in loose["flagged"]) == (abs(safety[6] - safety[0]).mean() > 0)  # noisy ok


def test_tier2_rule_sees_only_its_categories_and_groups():
    utility = [
        UtilityItem(f"a{i}", "arithmetic", "q", "s", (" 1", " 2", " 3", " 4"), 0) for i in range(10)
    ] + [
        UtilityItem(f"g{i}", "general_knowledge", "q", "s", (" a", " b", " c", " d"), 0)
        for i in range(10)
    ]
    safety = [SafetyItem(f"s{i}", "privacy", "r") for i in range(10)]
    correct = np.ones((7, 20))
    correct[2, :10] = 0  # deaf gets every arithmetic item wrong
    scores = _scores(np.zeros((7, 10)), correct)
    rules = [
        Rule("arith", "utility_drop", 0.05, categories=("arithmetic",)),
        Rule("gk", "utility_drop", 0.05, categories=("general_knowledge",)),
        Rule("arith, religion only", "utility_drop", 0.05, ("arithmetic",), ("religion",)),
        Rule("refusal", "refusal_drop", 0.1, categories=("theft",)),
    ]
    out = {r["name"]: r for r in tier2_checks(scores, utility, safety, rules, 200, 0)}
    assert [v["persona"] for v in out["arith"]["violations"]] == ["deaf"]
    assert out["gk"]["status"] == "pass" and out["arith, religion only"]["status"] == "pass"
    assert out["refusal"]["status"].startswith("not evaluated")


# --------------------------------------------------------------------------------------------
# statistics added by the audit
# --------------------------------------------------------------------------------------------


def test_pb_null_is_large_p_for_blind_scores_and_small_p_for_planted_ones():
    rng = np.random.default_rng(1)
    rate = (rng.random((31, 40)) < 0.3).astype(float)
    correct = (rng.random((31, 60)) < 0.8).astype(float)
    blind = pb_null(rate, correct, 300, 0)
    assert blind["p"] > 0.05 and blind["mean"] > 0  # item noise alone gives PB > 0
    planted = rate.copy()
    planted[:10] = (rng.random((10, 40)) < 0.8).astype(float)
    assert pb_null(planted, correct, 300, 0)["p"] < 0.01


def test_pb_change_is_zero_for_identical_passes_and_matches_the_point_estimates():
    rng = np.random.default_rng(2)
    safety, correct = rng.normal(0, 1, (7, 30)), rng.random((7, 40)) < 0.7
    before = _scores(safety + np.arange(7)[:, None] * 0.3, correct)
    after = _scores(safety, correct)
    same = pb_change(before, before, 100, 0)
    assert same == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    change = pb_change(before, after, 300, 0)

    def pb(s):
        return personalization_bias(
            np.stack([(s.safety[1:] > 0).mean(1), s.utility_correct[1:].mean(1)], axis=1)
        )

    assert change["estimate"] == pytest.approx(pb(before) - pb(after))
    assert change["low"] <= change["estimate"] <= change["high"] and change["estimate"] > 0


def test_readout_checks_the_named_class_against_the_baseline():
    class Probe:  # reads the first coordinate as P(older_adult)
        classes_ = np.array(["adult", "older_adult"])

        def predict_proba(self, X):
            p = 1 / (1 + np.exp(-np.asarray(X)[:, 0]))
            return np.stack([1 - p, p], axis=1)

    personas = [None, "senior", "teenager"]
    acts = np.zeros((3, 5, 4), np.float32)
    acts[1, :, 0] = 2.0  # senior reads as older
    safety = np.zeros((3, 5))
    out = readout({"age": (Probe(), 0.9)}, _scores(safety, np.ones((3, 2)), personas), acts)
    (named,) = [r for r in out["expected"] if r["persona"] == "senior"]
    assert named["class"] == "older_adult" and named["shift"] == pytest.approx(0.881 - 0.5, 1e-3)
    assert named["top_class"] == "older_adult"
    assert out["highlights"][0]["persona"] == "senior"


# --------------------------------------------------------------------------------------------
# mitigation
# --------------------------------------------------------------------------------------------


def test_mitigation_directions_come_from_the_other_fold():
    personas = (None, "blind", "deaf")
    rng = np.random.default_rng(3)
    means = rng.normal(size=(3, 2, 2, 8)).astype(np.float32)  # [persona, fold, layer, d]
    run = AuditPass(
        scores=_scores(np.zeros((3, 4)), np.ones((3, 4)), personas),
        layers=(0, 1),
        fold_means=means,
    )
    mit = fit_mitigation(run, layers=[1])
    assert mit.layers == (1,)
    for fold in (0, 1):
        vectors = torch.stack([d.vector for d in mit.directions[fold]]).numpy()
        expected = means[1:, 1 - fold, 1] - means[0, 1 - fold, 1]
        np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
        assert {d.target for d in mit.directions[fold]} == {"blind", "deaf"}
    assert item_folds(5).tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(ProbesError):
        fit_mitigation(run, layers=[5])


def test_mitigation_removes_a_persona_dependence_that_runs_through_the_residual(
    tiny_gemma, monkeypatch
):
    """Behaviour planted as a linear read-out of the last-token residual at one layer, taken in
    the same forward pass as the scorer (so it sees the interventions). The persona moves it
    only through that residual; ablating the fitted persona directions there must shrink PB."""
    layer = 1
    personas = [None, *list(PERSONAS)[:12]]
    safety_items = stratified_subset(load_safety_items(), 32)
    held_out = [item for item in load_safety_items() if item not in safety_items][:8]
    # the planted read-out direction: where persona means differ most on *other* requests
    calibration = [render_safety(item, p) for p in personas for item in held_out]
    acts = record(tiny_gemma, calibration, [layer])[layer][:, 0].reshape(len(personas), 8, -1)
    means = acts.mean(1)
    w = torch.linalg.svd(means[1:] - means[0], full_matrices=False).Vh[0]
    none_mean, scale = means[0], 1.0 / float((acts.reshape(-1, acts.shape[-1]) @ w).std())
    utility_items = stratified_subset(load_utility_items(), 4)

    def planted_safety(model, items, persona, batch_size=32):
        prompts = [render_safety(item, persona) for item in items]
        acts = record(model, prompts, [layer], batch_size=batch_size)[layer][:, 0]
        return ((acts - none_mean) @ w).numpy() * scale

    def perfect_utility(model, items, persona, batch_size=32):
        return np.ones(len(items))

    monkeypatch.setattr(audit_scoring, "score_safety", planted_safety)
    monkeypatch.setattr(audit_scoring, "utility_logprob_margin", perfect_utility)
    base = score_pass(
        tiny_gemma, personas, utility_items, safety_items, record_layers=[layer], progress=False
    )
    spread = base.scores.safety.mean(1)
    assert spread.std() > 0.3  # the planted behaviour does depend on the persona
    result = mitigate(
        tiny_gemma,
        base,
        utility_items,
        safety_items,
        load_policy(),
        {},
        layers=[layer],
        n_boot=200,
        n_perm=200,
        progress=False,
    )
    pb_before = personalization_bias(
        np.stack([(base.scores.safety[1:] > 0).mean(1), np.ones(len(personas) - 1)], axis=1)
    )
    pb_after = result.pb_after.pb["estimate"]
    assert pb_before > 0.1 and pb_after < 0.5 * pb_before
    assert result.pb_change["low"] > 0
    after = np.asarray(result.scores_after["safety_log_odds"]).mean(1)
    assert after.std() < 0.5 * spread.std()  # the continuous dependence shrinks too


def test_mitigated_pass_resumes_from_the_base_pass_with_the_same_numbers(tiny_gemma):
    """Both passes score the same fold batches: inside ``resume_from`` at the mitigation
    layer, the mitigated pass skips the layers before it and scores exactly as a whole pass."""
    from probes.interventions.prefix_reuse import resume_from

    model, layer = tiny_gemma, 2
    personas = [None, *list(PERSONAS)[:3]]
    utility_items = stratified_subset(load_utility_items(), 4)
    safety_items = stratified_subset(load_safety_items(), 4)
    args = (model, personas, utility_items, safety_items)
    settings = {"layers": [layer], "n_boot": 20, "n_perm": 20, "progress": False}

    def audit() -> tuple[AuditPass, object]:
        base = score_pass(*args, record_layers=range(model.n_layers), progress=False, by_fold=True)
        return base, mitigate(
            model, base, utility_items, safety_items, load_policy(), {}, **settings
        )

    whole_base, whole = audit()
    with resume_from(model, layer) as stats:
        base, resumed = audit()
    np.testing.assert_array_equal(base.scores.safety, whole_base.scores.safety)
    # scored per persona in one call (the default without an intervention): the same pass
    plain = score_pass(*args, record_layers=range(model.n_layers), progress=False)
    np.testing.assert_allclose(plain.scores.safety, base.scores.safety, atol=1e-5)
    np.testing.assert_allclose(plain.fold_means, base.fold_means, rtol=1e-5, atol=1e-4)
    for key in ("safety_log_odds", "utility_margin"):
        np.testing.assert_allclose(resumed.scores_after[key], whole.scores_after[key], atol=1e-5)
    # every persona's two folds, utility and safety: 16 scoring calls, plus the neutral KL
    assert stats.resumed >= 16 and stats.blocks_skipped == layer * stats.resumed
