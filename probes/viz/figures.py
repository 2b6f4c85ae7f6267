"""Plotly figures for probe results; saved as HTML, and as PNG where kaleido finds a browser."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from probes.atomic import atomic_write_bytes, atomic_write_text
from probes.probing.layerwise import LayerwiseResult

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
FONT = {"family": "Helvetica, Arial, sans-serif", "size": 14}


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 460) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.02, "xanchor": "left"},
        xaxis_title=x,
        yaxis_title=y,
        template="plotly_white",
        font=FONT,
        height=height,
        width=820,
        margin={"l": 70, "r": 30, "t": 70, "b": 60},
        legend={"orientation": "h", "yanchor": "bottom", "y": -0.32, "x": 0.0},
    )
    if x == "layer":
        fig.update_xaxes(dtick=2, range=[-0.5, None], rangemode="tozero")
    return fig


def _hex_to_rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _accuracy_trace(
    fig: go.Figure, result: LayerwiseResult, name: str, color: str, band: bool = True
) -> None:
    layers = [r["layer"] for r in result.rows]
    if band:
        fig.add_trace(
            go.Scatter(
                x=layers + layers[::-1],
                y=[r["ci_high"] for r in result.rows] + [r["ci_low"] for r in result.rows][::-1],
                fill="toself",
                fillcolor=_hex_to_rgba(color, 0.18),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=[r["accuracy"] for r in result.rows],
            mode="lines+markers",
            name=name,
            line={"color": color, "width": 2.5},
            marker={"size": 6},
        )
    )


def plot_layerwise(result: LayerwiseResult) -> go.Figure:
    """Probe accuracy vs layer with its 95% band, the control task, majority and BoW lines."""
    fig = go.Figure()
    _accuracy_trace(fig, result, "probe accuracy (95% CI)", PALETTE[0])
    layers = [r["layer"] for r in result.rows]
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=[r["control_accuracy"] for r in result.rows],
            mode="lines",
            name="control task (shuffled labels)",
            line={"color": "#7f7f7f", "dash": "dot", "width": 2},
        )
    )
    fig.add_hline(
        y=result.majority_accuracy,
        line={"color": "#444", "dash": "dash", "width": 1.5},
        annotation_text="majority class",
        annotation_position="bottom right",
    )
    if result.bow:
        fig.add_hline(
            y=result.bow["accuracy"],
            line={"color": PALETTE[1], "dash": "dash", "width": 1.5},
            annotation_text="bag of words",
            annotation_position="top right",
        )
    split = "held-out template families" if result.splits == "group" else "stratified folds"
    title = (
        f"<b>{result.attribute}</b>: probe accuracy by layer "
        f"<span style='font-size:12px'>({len(result.labels)} classes, n={result.n_examples}, "
        f"{split}, {result.site})</span>"
    )
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, title, "layer", "out-of-fold accuracy")


def plot_overview(results: Sequence[LayerwiseResult]) -> go.Figure:
    """Every attribute's selectivity-free view: accuracy above the majority class, by layer."""
    fig = go.Figure()
    for i, result in enumerate(results):
        chance = result.majority_accuracy
        fig.add_trace(
            go.Scatter(
                x=[r["layer"] for r in result.rows],
                y=[(r["accuracy"] - chance) / max(1 - chance, 1e-9) for r in result.rows],
                mode="lines+markers",
                name=f"{result.attribute} ({len(result.labels)})",
                line={"color": PALETTE[i % len(PALETTE)], "width": 2.2},
                marker={"size": 5},
            )
        )
    fig.add_hline(y=0, line={"color": "#444", "dash": "dash", "width": 1})
    fig.update_yaxes(range=[-0.1, 1.02])
    return _layout(
        fig,
        "<b>Where each user attribute becomes linearly readable</b> "
        "<span style='font-size:12px'>(0 = majority class, 1 = perfect)</span>",
        "layer",
        "normalised probe accuracy",
    )


def plot_reading_vs_control(reading: LayerwiseResult, control: LayerwiseResult) -> go.Figure:
    """TalkTuner's two probes: at the end of a read-out suffix vs at the last prompt token."""
    fig = go.Figure()
    _accuracy_trace(fig, reading, "reading probe (end of read-out suffix)", PALETTE[0])
    _accuracy_trace(fig, control, "control probe (last prompt token)", PALETTE[2])
    fig.add_hline(
        y=reading.majority_accuracy,
        line={"color": "#444", "dash": "dash", "width": 1.5},
        annotation_text="majority class",
        annotation_position="bottom right",
    )
    fig.update_yaxes(range=[0, 1.02])
    return _layout(
        fig, f"<b>{reading.attribute}</b>: reading vs control probe", "layer", "accuracy"
    )


def plot_transfer(matrix: dict[str, Any]) -> go.Figure:
    """Heatmaps of probe and bag-of-words accuracy for every (train, test) pair."""
    from plotly.subplots import make_subplots

    names = matrix["names"]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(f"probe (layer {matrix['layer']})", "bag of words"),
        horizontal_spacing=0.16,
    )
    for col, key in ((1, "probe"), (2, "bow")):
        values = matrix[key]
        fig.add_trace(
            go.Heatmap(
                z=values,
                x=names,
                y=names,
                zmin=0,
                zmax=1,
                colorscale="Blues",
                showscale=col == 2,
                text=[[f"{v:.2f}" for v in row] for row in values],
                texttemplate="%{text}",
                hovertemplate="train %{y}<br>test %{x}<br>accuracy %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    _layout(fig, "<b>Transfer</b>: train on one set, test on another", "", "", height=480)
    fig.update_xaxes(title_text="test on")
    fig.update_yaxes(title_text="train on", col=1)
    fig.update_yaxes(autorange="reversed")
    return fig


def browser_for_png() -> str | None:
    """A Chromium/Chrome binary kaleido can drive, if one is installed."""
    for candidate in (
        os.environ.get("BROWSER_PATH"),
        "chromium",
        "chromium-browser",
        "google-chrome",
    ):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def save_figure(fig: go.Figure, stem: str | Path, png: bool = True) -> list[Path]:
    """Write ``stem.html`` (plotly.js beside it, so it opens offline) and, if possible, PNG.

    Also writes ``stem.json`` (the figure as plotly JSON), which ``report.html`` embeds; it is
    not in the returned list, which names the files meant for a reader (HTML, then PNG).
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    html = fig.to_html(include_plotlyjs="directory", full_html=True)
    written = [atomic_write_text(stem.with_suffix(".html"), html)]
    atomic_write_text(stem.with_suffix(".json"), fig.to_json())
    js = stem.parent / "plotly.min.js"
    if not js.exists():
        from plotly.offline import get_plotlyjs

        atomic_write_text(js, get_plotlyjs())
    if png and (data := png_bytes(fig)) is not None:
        written.append(atomic_write_bytes(stem.with_suffix(".png"), data))
    return written


_KALEIDO_SERVER: list[bool] = []  # [started?] once the first PNG was asked for


def _start_kaleido_server() -> None:
    """One headless browser for the whole process: a one-shot export starts Chromium for every
    figure (about 2.5 s each on this CPU); a kept server draws one in about 0.4 s."""
    import atexit

    import kaleido

    try:
        kaleido.start_sync_server(silence_warnings=True)
    except Exception:  # an old kaleido or a server that will not start: one-shot exports
        _KALEIDO_SERVER.append(False)
        return
    _KALEIDO_SERVER.append(True)
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)


def png_bytes(fig: go.Figure, scale: int = 2) -> bytes | None:
    """The figure as PNG, or None where no browser is installed or kaleido fails."""
    browser = browser_for_png()
    if browser is None:
        return None
    os.environ.setdefault("BROWSER_PATH", browser)
    if not _KALEIDO_SERVER:
        _start_kaleido_server()
    try:
        with warnings.catch_warnings():  # plotly warns that kopts are ignored by a server
            warnings.simplefilter("ignore", UserWarning)
            return fig.to_image(format="png", scale=scale)
    except Exception:  # kaleido failing must not lose the HTML already written
        return None


def plot_transfer_bars(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Per attribute: probe vs bag-of-words accuracy when trained on one set, tested on another."""
    names = [r["attribute"] for r in rows]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=names,
            y=[r["probe_accuracy"] for r in rows],
            name="probe (layer chosen on the training set)",
            marker_color=PALETTE[0],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [r["ci_high"] - r["probe_accuracy"] for r in rows],
                "arrayminus": [r["probe_accuracy"] - r["ci_low"] for r in rows],
            },
        )
    )
    fig.add_trace(
        go.Bar(
            x=names,
            y=[r["bow_accuracy"] for r in rows],
            name="bag of words",
            marker_color=PALETTE[1],
        )
    )
    fig.add_trace(
        go.Scatter(
            x=names,
            y=[r["chance"] for r in rows],
            mode="markers",
            name="chance",
            marker={"symbol": "line-ew-open", "size": 34, "color": "#222", "line": {"width": 2}},
        )
    )
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.02])
    return _layout(
        fig,
        "<b>Transfer</b>: trained on built-in templates, tested on hand-written chatty messages",
        "",
        "accuracy on the chatty corpus",
    )
