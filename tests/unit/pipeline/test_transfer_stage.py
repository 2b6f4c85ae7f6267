"""The transfer stage on a tiny model: styles, selection on other text, one held-out score."""

from __future__ import annotations

from dataclasses import replace

import pytest

from probes.datasets import heldout_corpus, load_behavior_items
from probes.pipeline.config import load_config
from probes.pipeline.stage_cache import StageRunner
from probes.pipeline.transfer import print_transfer_summary, stage_transfer, transfer_row


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home"))
    return tmp_path


def test_stage_chooses_on_other_styles_and_scores_the_held_out_corpus(
    tiny_gemma, home, capsys
) -> None:
    config = load_config(quick=True)
    probes = replace(config.probes, attributes=("dialect_us_uk",), size=16)
    transfer = replace(config.transfer, conversation_size=8, n_boot=50, Cs=(1.0,))
    runner = StageRunner(None, tiny_gemma.describe(), home / "run", say=print)
    result = stage_transfer(tiny_gemma, transfer, probes, runner, [1, 3], None)

    unit = result["results"]["dialect_us_uk"]
    selection, report = unit["selection"], unit["report"]
    assert unit["style_sizes"] == {"templated": 16, "conversations": 8, "chatty": 40}
    assert selection["validation"] == ["conversations", "chatty"]
    assert selection["chosen"]["layer"] in (1, 3) and len(selection["grid"]) == 4
    assert {r["setting"] for r in selection["grid"]} == {"last/raw", "mean/raw"}
    assert "the test set was not used" in selection["reason"]
    assert report["test"] == "held-out corpus"
    assert report["n_test"] == len(heldout_corpus("dialect_us_uk"))
    assert [r["layer"] for r in report["rows"]] == [1, 3]
    readout = result["readout"][0]
    assert readout["n_items"] == len(load_behavior_items("dialect")) == len(readout["reading"])
    assert -1 <= readout["r"] <= 1 and readout["ci_low"] <= readout["ci_high"]
    assert (home / "run" / "figures" / "transfer_heldout.json").is_file()

    row = result["summary"][0]
    assert row["transfer"] == report["accuracy"] and row["in_distribution"] is None
    print_transfer_summary(result)
    assert "read-out vs tailoring, dialect" in capsys.readouterr().out


def test_the_summary_warns_when_in_distribution_is_far_above_transfer() -> None:
    report = {
        "attribute": "education",
        "test": "held-out corpus",
        "n_test": 48,
        "layer": 5,
        "accuracy": 0.5,
        "ci_low": 0.4,
        "ci_high": 0.6,
        "best_layer": 6,
        "best_layer_accuracy": 0.55,
        "bow_accuracy": 0.4,
        "in_set_accuracy": 0.8,
        "ece": 0.1,
        "chance": 1 / 3,
    }
    unit = {"report": report, "selection": {"chosen": {"setting": "last/raw", "C": 1.0}}}
    far = {"education": {"accuracy": 0.99, "best_layer": 12}}
    near = {"education": {"accuracy": 0.65, "best_layer": 12}}
    assert transfer_row("education", unit, far)["warning"]
    assert not transfer_row("education", unit, near)["warning"]


def test_the_probes_stage_extracts_the_transfer_positions_in_its_own_pass(tiny_gemma, home):
    from probes.cache.extraction import extract_dataset
    from probes.datasets import load_dataset
    from probes.pipeline.run import shared_positions, stage_probes

    config = load_config(quick=True)
    assert shared_positions(config) == {"dialect_us_uk": ("mean",)}  # --quick transfers dialect
    assert shared_positions(replace(config, stages=("probes",))) == {}
    probes = replace(config.probes, attributes=("dialect_us_uk",), size=16, folds=2, n_boot=20)
    runner = StageRunner(None, tiny_gemma.describe(), home / "run", say=print)
    stage_probes(tiny_gemma, probes, runner, {"dialect_us_uk": ("mean",)})
    calls: list[int] = []
    handle = tiny_gemma.hf_model.base_model.register_forward_pre_hook(
        lambda *a, **k: calls.append(1)
    )
    try:  # the transfer stage's templated store at "mean" is already there
        extract_dataset(
            tiny_gemma,
            load_dataset("dialect_us_uk", size=16, seed=probes.seed),
            position="mean",
            layers="all",
            batch_size=probes.batch_size,
            progress=False,
        )
    finally:
        handle.remove()
    assert calls == []
