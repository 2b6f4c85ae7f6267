"""The one-page ``report.html`` of a run folder: a header, then one section per stage, each with
how to read it, its figures (embedded from the ``stem.json`` that ``save_figure`` writes) and a
compact table of its numbers. The page loads one local ``plotly.min.js``, so it works offline."""

from __future__ import annotations

import html
import json
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.atomic import atomic_write_text

REPORT_NAME = "report.html"
PLOTLY_JS = "plotly.min.js"
DEFAULT_JS = f"figures/{PLOTLY_JS}"


@dataclass(frozen=True)
class Section:
    """One stage of a run: a title, how to read it, its figures and a table of its numbers.

    ``figures`` are stems relative to the run folder (``"figures/probe_overview"``); the
    report embeds ``<stem>.json``. ``table`` rows are dicts; columns follow first appearance.
    """

    title: str
    reading: str
    figures: tuple[str, ...] = ()
    table: tuple[dict, ...] = ()
    note: str = ""


def format_value(value: Any) -> str:
    """A table cell as text: floats to 3 decimals (general format when tiny or huge)."""
    if value is None:
        return ""
    if isinstance(value, bool | int | str):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.3f}"
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return format_value(value.item())
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _slug(text: str, index: int) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return f"s{index}-{words[:40]}".rstrip("-")


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """An HTML table of dict rows; every key and value is escaped, numbers right-aligned."""
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [str(k) for k in row if str(k) not in columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        by_name = {str(k): v for k, v in row.items()}
        cells = []
        for column in columns:
            value = by_name.get(column)
            cls = ' class="num"' if _is_number(value) else ""
            cells.append(f"<td{cls}>{html.escape(format_value(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<div class="table-wrap"><table>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _header_value(value: Any) -> str:
    """Scalars inline; a flat mapping as ``key = value`` chips; anything deeper as JSON."""
    if isinstance(value, Mapping):
        if all(not isinstance(v, Mapping | list | tuple) for v in value.values()):
            pairs = [html.escape(f"{k} = {format_value(v)}") for k, v in value.items()]
            chips = "".join(f'<span class="chip">{pair}</span>' for pair in pairs)
            return chips or '<span class="muted">(none)</span>'
        text = json.dumps(value, indent=2, default=str)
        return (
            f"<details><summary>{len(value)} {'entry' if len(value) == 1 else 'entries'}</summary>"
            f"<pre>{html.escape(text)}</pre></details>"
        )
    return html.escape(format_value(value))


def render_header(header: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{_header_value(v)}</td></tr>"
        for k, v in header.items()
    )
    return f'<table class="header">{rows}</table>' if rows else ""


def _script_safe(json_text: str) -> str:
    """JSON that cannot close its <script>: '<' only occurs inside JSON strings, where
    ``\\u003c`` means the same character."""
    return json_text.replace("<", "\\u003c")


def _figure_json(run_dir: Path, stem: str) -> tuple[str | None, str]:
    """The figure's JSON, made safe to sit inside a <script> element, or None and why not."""
    path = run_dir / f"{stem}.json"
    if not path.is_file():
        html_path = run_dir / f"{stem}.html"
        why = f"figure missing: {stem}.json was not found in the run folder"
        if html_path.is_file():
            return None, f"{why}; the figure is in {stem}.html"
        return None, why
    text = path.read_text(encoding="utf-8")
    try:
        figure = json.loads(text)
    except json.JSONDecodeError:
        return None, f"figure missing: {stem}.json is not valid JSON"
    if not isinstance(figure, dict):
        return None, f"figure missing: {stem}.json does not hold a plotly figure"
    return _script_safe(text), ""


def _figure_html(run_dir: Path, stem: str, fig_id: str) -> tuple[str, bool]:
    data, why = _figure_json(run_dir, stem)
    if data is None:
        return f'<div class="missing">{html.escape(why)}</div>', False
    return (
        f'<figure><div class="plot" id="{fig_id}"></div>'
        f'<script type="application/json" data-figure="{fig_id}">{data}</script>'
        f"<figcaption>{html.escape(stem)}</figcaption></figure>",
        True,
    )


def _plotly_src(run_dir: Path, stems: Sequence[str]) -> str:
    """Relative src of the plotly.js beside the first figure that has one, else the default."""
    for stem in stems:
        candidate = run_dir / Path(stem).parent / PLOTLY_JS
        if candidate.is_file():
            return Path(os.path.relpath(candidate, run_dir)).as_posix()
    return DEFAULT_JS


CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: #1d2329; background: #fff; margin: 0; line-height: 1.5; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.3em; margin: 2.2em 0 0.3em; padding-top: 0.6em; border-top: 1px solid #e3e6e8; }
a { color: #1f5fa8; }
.muted, figcaption, .note { color: #5f6b76; }
figcaption { font-size: 0.8em; text-align: right; }
.reading { margin: 0.3em 0 1em; }
.note { font-size: 0.9em; margin-top: 0.6em; }
nav.toc { background: #f6f8fa; border: 1px solid #e3e6e8; border-radius: 6px;
  padding: 10px 18px; margin: 1em 0 1.5em; }
nav.toc ol { margin: 0.3em 0; padding-left: 1.4em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e6e8; text-align: left;
  vertical-align: top; }
thead th { border-bottom: 2px solid #c9ced3; background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.header th { background: none; width: 9em; color: #5f6b76; font-weight: 600; }
.table-wrap { overflow-x: auto; }
.chip { display: inline-block; background: #f1f3f5; border-radius: 4px; padding: 0 6px;
  margin: 1px 4px 1px 0; font-size: 0.95em; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 0.85em; }
figure { margin: 0.8em 0; }
.plot { width: 100%; min-height: 420px; }
.missing { border: 1px dashed #d62728; color: #a01c1c; background: #fff5f5; padding: 14px;
  border-radius: 6px; margin: 0.8em 0; }
"""

RENDER_JS = """
(function () {
  var blocks = document.querySelectorAll('script[type="application/json"][data-figure]');
  blocks.forEach(function (block) {
    var div = document.getElementById(block.getAttribute("data-figure"));
    if (typeof Plotly === "undefined") {
      div.className = "missing";
      div.textContent = "plotly.js did not load from " + PLOTLY_SRC +
        ": open this report from inside its run folder.";
      return;
    }
    var fig = JSON.parse(block.textContent);
    Plotly.newPlot(div, fig.data || [], fig.layout || {},
                   {responsive: true, displaylogo: false});
  });
})();
"""


def render_report(
    run_dir: Path, title: str, header: Mapping[str, Any], sections: Sequence[Section]
) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    run_dir = Path(run_dir)
    stems = [stem for section in sections for stem in section.figures]
    toc, parts, n_figures = [], [], 0
    for i, section in enumerate(sections, start=1):
        anchor = _slug(section.title, i)
        toc.append(f'<li><a href="#{anchor}">{html.escape(section.title)}</a></li>')
        body = [f'<h2 id="{anchor}">{html.escape(section.title)}</h2>']
        if section.reading:
            body.append(f'<p class="reading">{html.escape(section.reading)}</p>')
        for j, stem in enumerate(section.figures, start=1):
            figure, ok = _figure_html(run_dir, stem, f"fig-{i}-{j}")
            body.append(figure)
            n_figures += int(ok)
        body.append(render_table(section.table))
        if section.note:
            body.append(f'<p class="note">{html.escape(section.note)}</p>')
        parts.append(f"<section>{''.join(body)}</section>")
    src = _plotly_src(run_dir, stems)
    scripts = ""
    if n_figures:
        scripts = (
            f'<script src="{html.escape(src)}"></script>\n'
            f"<script>var PLOTLY_SRC = {_script_safe(json.dumps(src))};{RENDER_JS}</script>"
        )
    nav = f'<nav class="toc"><b>Contents</b><ol>{"".join(toc)}</ol></nav>' if toc else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{html.escape(title)}</h1>\n{render_header(header)}\n{nav}\n"
        + "\n".join(parts)
        + f"\n</main>\n{scripts}\n</body>\n</html>\n"
    )


def write_report(
    run_dir: Path, title: str, header: dict[str, Any], sections: Sequence[Section]
) -> Path:
    """Write ``run_dir/report.html`` atomically and return its path.

    A figure whose ``stem.json`` is missing or unreadable shows a "figure missing" note instead.
    If no ``plotly.min.js`` sits beside any figure, one is written to ``figures/``.
    """
    run_dir = Path(run_dir)
    stems = [stem for section in sections for stem in section.figures]
    js = run_dir / _plotly_src(run_dir, stems)
    if not js.is_file() and any((run_dir / f"{stem}.json").is_file() for stem in stems):
        from plotly.offline import get_plotlyjs

        atomic_write_text(js, get_plotlyjs())  # figures written without save_figure
    return atomic_write_text(run_dir / REPORT_NAME, render_report(run_dir, title, header, sections))
