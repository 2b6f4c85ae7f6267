"""report.html: figures embedded from their JSON, one local plotly.js, escaped text, and a
headless-Chromium check that plotly really draws every figure."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from probes.report.page import Section, format_value, write_report
from probes.viz.export import save_figure

ROOT = Path(__file__).resolve().parents[3]
STEMS = ("figures/accuracy", "figures/dose")


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    line = go.Figure(go.Scatter(x=[0, 1, 2, 3], y=[0.5, 0.62, 0.91, 0.88], name="alpha-trace"))
    line.update_layout(title="<b>dialect</b>: accuracy </script> by layer")
    bars = go.Figure(go.Bar(x=["direction", "random"], y=[1.25, 0.05], name="beta-trace"))
    for fig, stem in zip((line, bars), STEMS, strict=True):
        save_figure(fig, run / stem, png=False)
    return run


def _report(run: Path, missing: bool = False) -> Path:
    sections = [
        Section(
            title="Probes <script>alert('x')</script>",
            reading="Accuracy by layer; the band is a 95% bootstrap interval.",
            figures=(STEMS[0],),
            table=({"attribute": "dialect", "accuracy": 0.932149, "ci": (0.91, 0.9531), "n": 600},),
        ),
        Section(
            title="Steering",
            reading="Answer log-odds against strength; the dotted line is a random direction.",
            figures=(STEMS[1], "figures/never_written") if missing else (STEMS[1],),
            table=({"layer": 2, "kl": 2.5e-05, "flip_rate": float("nan")},),
            note="<b>not bold</b>",
        ),
    ]
    header = {"model": "tiny-gemma3", "config": {"size": 160}, "versions": {"probes": "0.1.0"}}
    return write_report(run, "Run <script>", header, sections)


def test_save_figure_writes_the_json_the_report_embeds(tmp_path):
    run = _run_folder(tmp_path)
    names = [pio.from_json((run / f"{stem}.json").read_text()).data[0].name for stem in STEMS]
    assert names == ["alpha-trace", "beta-trace"]
    assert (run / "figures" / "plotly.min.js").is_file()


def test_report_embeds_every_figure_and_one_relative_plotly_script(tmp_path):
    run = _run_folder(tmp_path)
    path = _report(run)
    assert path == run / "report.html"
    text = path.read_text()
    for figure_id in ("fig-1-1", "fig-2-1"):
        assert f'<div class="plot" id="{figure_id}"></div>' in text
        assert f'data-figure="{figure_id}"' in text
    assert "alpha-trace" in text and "beta-trace" in text  # the figures' JSON data
    sources = re.findall(r'<script src="([^"]+)"', text)
    assert sources == ["figures/plotly.min.js"]
    assert (run / sources[0]).is_file()
    assert "Plotly.newPlot" in text
    assert "figure missing" not in text


def test_report_escapes_text_and_json(tmp_path):
    text = _report(_run_folder(tmp_path)).read_text()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<title>Run &lt;script&gt;</title>" in text
    assert "<script>alert" not in text
    assert "&lt;b&gt;not bold&lt;/b&gt;" in text
    # a '</script>' inside a figure title cannot end the JSON block early
    assert "accuracy </script>" not in text and "accuracy \\u003c" in text
    assert text.count("<script") == text.count("</script>")


def test_hand_written_figure_json_cannot_close_its_script(tmp_path):
    figure = {"data": [{"type": "bar", "y": [1], "name": "</script><b>x"}], "layout": {}}
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "raw.json").write_text(json.dumps(figure))
    text = write_report(tmp_path, "t", {}, [Section("s", "r", ("figures/raw",))]).read_text()
    assert "</script><b>x" not in text and "\\u003c/script>\\u003cb>x" in text
    assert text.count("<script") == text.count("</script>")
    assert (tmp_path / "figures" / "plotly.min.js").is_file()


def test_report_tables_contents_and_numbers(tmp_path):
    text = _report(_run_folder(tmp_path)).read_text()
    assert '<td class="num">0.932</td>' in text
    assert "[0.910, 0.953]" in text
    assert '<td class="num">2.5e-05</td>' in text
    assert '<td class="num">n/a</td>' in text
    for anchor in re.findall(r'<h2 id="([^"]+)"', text):
        assert f'href="#{anchor}"' in text
    assert format_value(True) == "True" and format_value(None) == "" and format_value(12) == "12"


def test_missing_figure_is_marked_not_a_crash(tmp_path):
    run = _run_folder(tmp_path)
    (run / "figures" / "dose.json").unlink()
    text = _report(run, missing=True).read_text()
    assert text.count('class="missing"') == 2
    assert "figures/dose.json was not found" in text and "figures/dose.html" in text
    assert "figures/never_written.json was not found" in text
    assert '<div class="plot" id="fig-1-1"></div>' in text


def test_report_without_figures_loads_no_script(tmp_path):
    path = write_report(tmp_path, "numbers only", {}, [Section("Table", "rows", (), ({"a": 1},))])
    assert "<script" not in path.read_text()


def _chromium() -> str | None:
    return shutil.which("chromium")


@pytest.mark.skipif(_chromium() is None, reason="needs chromium on PATH")
def test_plotly_draws_every_figure_in_headless_chromium(tmp_path):
    path = _report(_run_folder(tmp_path), missing=True)
    command = [
        _chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--virtual-time-budget=10000",
        "--dump-dom",
        path.as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    ids = re.findall(r'<div class="[^"]*plot[^"]*" id="(fig-[0-9-]+)"', dom)
    assert ids == ["fig-1-1", "fig-2-1"]
    for i, figure_id in enumerate(ids):
        start = dom.index(f'id="{figure_id}"')
        end = dom.index(f'id="{ids[i + 1]}"') if i + 1 < len(ids) else len(dom)
        assert 'class="main-svg"' in dom[start:end], f"plotly drew nothing in {figure_id}"
    assert "alpha-trace" in dom  # the legend or hover text of the drawn figure


@pytest.mark.skipif(_chromium() is None, reason="needs chromium on PATH")
def test_screenshot_script_writes_a_png(tmp_path):
    path = _report(_run_folder(tmp_path))
    out = tmp_path / "shot.png"
    script = ROOT / "scripts" / "screenshot_report.py"
    args = ["--report", str(path), "--out", str(out), "--height", "1600"]
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out.resolve())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_screenshot_script_without_browser_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import screenshot_report
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    monkeypatch.setattr(screenshot_report, "find_browser", lambda: None)
    report = tmp_path / "report.html"
    report.write_text("<html></html>")
    code = screenshot_report.main(["--report", str(report), "--out", str(tmp_path / "x.png")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no Chromium") and "\n" not in err
