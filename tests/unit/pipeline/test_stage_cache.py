"""Stage results are content-addressed: a re-run redoes only what changed, to the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probes.pipeline.stage_cache import StageCache, StageRunner, stage_key


class Killed(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way may swallow it."""


def _writer(out: Path, text: str, calls: list[str]):
    def compute() -> dict:
        calls.append(text)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        (out / "figures" / "a.json").write_text(text)
        return {"value": text, "pair": (1, 2)}

    return compute


def test_second_run_reuses_the_result_and_puts_the_files_back(tmp_path):
    cache = StageCache(tmp_path / "stages")
    calls: list[str] = []
    first = cache.run("demo", {"n": 1}, tmp_path / "run1", _writer(tmp_path / "run1", "x", calls))
    assert not first.reused and first.result == {"value": "x", "pair": [1, 2]}
    second = cache.run("demo", {"n": 1}, tmp_path / "run2", _writer(tmp_path / "run2", "y", calls))
    assert second.reused and second.result == first.result and calls == ["x"]
    assert (tmp_path / "run2" / "figures" / "a.json").read_text() == "x"


def test_other_inputs_or_fresh_recompute(tmp_path):
    cache = StageCache(tmp_path / "stages")
    calls: list[str] = []
    cache.run("demo", {"n": 1}, tmp_path / "r", _writer(tmp_path / "r", "a", calls))
    cache.run("demo", {"n": 2}, tmp_path / "r", _writer(tmp_path / "r", "b", calls))
    fresh = StageCache(tmp_path / "stages", reuse=False)
    fresh.run("demo", {"n": 1}, tmp_path / "r", _writer(tmp_path / "r", "c", calls))
    assert calls == ["a", "b", "c"]
    # the recompute replaced the entry
    again = cache.run("demo", {"n": 1}, tmp_path / "s", _writer(tmp_path / "s", "d", calls))
    assert again.reused and again.result["value"] == "c" and calls == ["a", "b", "c"]


def test_a_stage_that_dies_leaves_no_entry(tmp_path):
    cache = StageCache(tmp_path / "stages")

    def dies() -> dict:
        (tmp_path / "r" / "half.json").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "r" / "half.json").write_text("{")
        raise Killed

    with pytest.raises(Killed):
        cache.run("demo", {"n": 1}, tmp_path / "r", dies)
    assert not any(p.name.startswith("demo-") for p in (tmp_path / "stages").glob("*"))
    calls: list[str] = []
    outcome = cache.run("demo", {"n": 1}, tmp_path / "r", _writer(tmp_path / "r", "ok", calls))
    assert not outcome.reused and calls == ["ok"]


def test_a_damaged_entry_is_recomputed(tmp_path):
    cache = StageCache(tmp_path / "stages")
    calls: list[str] = []
    first = cache.run("demo", {}, tmp_path / "r", _writer(tmp_path / "r", "a", calls))
    (cache.entry("demo", first.key) / "files" / "figures" / "a.json").write_text("tampered")
    again = cache.run("demo", {}, tmp_path / "s", _writer(tmp_path / "s", "b", calls))
    assert not again.reused and calls == ["a", "b"]


def test_a_named_file_is_keyed_by_its_content(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("a = 1\n")
    before = stage_key("audit", {"policy": str(policy)})
    assert stage_key("audit", {"policy": str(policy)}) == before
    policy.write_text("a = 2\n")
    assert stage_key("audit", {"policy": str(policy)}) != before


def test_names_are_not_files_and_a_tampered_result_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = stage_key("mediation", {"case": "dialect", "layers": "auto"})
    Path("dialect").write_text("a file that happens to share a name")
    assert stage_key("mediation", {"case": "dialect", "layers": "auto"}) == before

    cache = StageCache(tmp_path / "stages")
    calls: list[str] = []
    first = cache.run("demo", {}, tmp_path / "r", _writer(tmp_path / "r", "a", calls))
    (cache.entry("demo", first.key) / "result.json").write_text('{"value": "forged"}\n')
    again = cache.run("demo", {}, tmp_path / "s", _writer(tmp_path / "s", "b", calls))
    assert not again.reused and again.result["value"] == "b"


def test_only_the_run_folders_figures_go_into_an_entry(tmp_path):
    cache = StageCache(tmp_path / "stages")

    def compute() -> dict:
        (tmp_path / "r" / "figures").mkdir(parents=True, exist_ok=True)
        (tmp_path / "r" / "figures" / "f.json").write_text("{}")
        (tmp_path / "r" / "venv" / "lib").mkdir(parents=True, exist_ok=True)
        (tmp_path / "r" / "venv" / "lib" / "x.py").write_text("x = 1")
        return {}

    outcome = cache.run("demo", {}, tmp_path / "r", compute)
    manifest = json.loads((cache.entry("demo", outcome.key) / "manifest.json").read_text())
    assert list(manifest["files"]) == ["figures/f.json"]


def test_an_entry_made_without_a_browser_is_not_reused_with_one(monkeypatch):
    import probes.viz.export

    monkeypatch.setattr(probes.viz.export, "browser_for_png", lambda: None)
    without = stage_key("demo", {})
    monkeypatch.setattr(probes.viz.export, "browser_for_png", lambda: "/usr/bin/chromium")
    assert stage_key("demo", {}) != without


def test_runner_keys_on_the_model_but_not_its_folder(tmp_path):
    calls: list[str] = []
    cache = StageCache(tmp_path / "stages")
    model = {"name": "m", "fingerprint": "f1", "location": "/a"}
    StageRunner(cache, model, tmp_path / "r").run("u", "s", {}, _writer(tmp_path / "r", "1", calls))
    moved = {**model, "location": "/b"}
    runner = StageRunner(cache, moved, tmp_path / "r", say=lambda _: None)
    runner.run("u", "s", {}, _writer(tmp_path / "r", "2", calls))
    assert runner.reused == ["u"] and calls == ["1"]
    other = StageRunner(cache, {**model, "fingerprint": "f2"}, tmp_path / "r")
    other.run("u", "s", {}, _writer(tmp_path / "r", "3", calls))
    assert calls == ["1", "3"]


CONFIG = (
    '[probes]\nattributes = ["dialect_us_uk", "age"]\nsize = 48\nn_boot = 50\n'
    "[mediation]\npairs = 3\nn_boot = 50\nn_perm = 50\n"
    "[audit]\nmax_items = 4\nn_boot = 50\nn_perm = 50\n"
)


def _run(tmp_path: Path, out: str, fresh: bool = False) -> dict:
    from probes.pipeline.run import RunOptions, run_main_job

    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    options = RunOptions(
        config=str(config),
        quick=False,
        model="tiny-gemma3",
        device="cpu",
        dtype=None,
        out=str(tmp_path / out),
        fresh=fresh,
    )
    assert run_main_job(options) == 0
    return json.loads((tmp_path / out / "results.json").read_text())


def _numbers(stages: dict) -> dict:
    """Stage results without wall-clock timings, and with store paths relative to their cache
    root: the only parts that may differ between two homes."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "seconds"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, str) and "/activations/" in value:
            return value.split("/activations/", 1)[1]
        return value

    return strip(stages)


def _figure_json(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "figures").glob("*.json"))}


def test_a_run_killed_in_the_audit_resumes_to_the_same_numbers_and_figures(tmp_path, monkeypatch):
    import probes.pipeline.stages

    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home_whole"))
    whole = _run(tmp_path, "whole")

    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home_killed"))

    def killed(*args, **kwargs):
        raise Killed

    real_audit = probes.pipeline.stages.stage_audit
    monkeypatch.setattr(probes.pipeline.stages, "stage_audit", killed)
    with pytest.raises(Killed):
        _run(tmp_path, "killed")
    monkeypatch.setattr(probes.pipeline.stages, "stage_audit", real_audit)
    resumed = _run(tmp_path, "killed")
    units = [
        "first look",
        "probes: dialect_us_uk",
        "probes: age",
        "transfer: dialect_us_uk",
        "transfer: age",
        "interventions",
        "mediation: dialect",
        "mediation: proficiency",
        "mediation: echo_chamber",
    ]
    assert resumed["reused"] == units  # everything but the audit came from the killed run
    assert _numbers(resumed["stages"]) == _numbers(whole["stages"])
    assert _figure_json(tmp_path / "killed") == _figure_json(tmp_path / "whole")

    elsewhere = _run(tmp_path, "elsewhere")  # a new run folder gets every file back
    assert elsewhere["reused"] == [*units, "audit"]
    assert elsewhere["stages"] == resumed["stages"]  # the same bytes, timings too
    assert _figure_json(tmp_path / "elsewhere") == _figure_json(tmp_path / "whole")
    assert (tmp_path / "elsewhere" / "report.html").read_text().count("<h2") == (
        (tmp_path / "whole" / "report.html").read_text().count("<h2")
    )
    assert _run(tmp_path, "fresh", fresh=True)["reused"] == []
