"""Figures of probe results: accuracy by layer with controls, the overview across
attributes, reading vs control probes, and transfer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

from probes.errors import ProbesError
from probes.probing.layerwise import LayerwiseResult
from probes.viz.theme import PALETTE, rgba, themed

if TYPE_CHECKING:
    from probes.readers.bundle import Reader


def _accuracy_trace(
    fig: go.Figure,
    rows: Sequence[Mapping[str, Any]],
    name: str,
    color: str,
    band: bool = True,
) -> None:
    """Accuracy by layer from result rows (``layer``, ``accuracy``, ``ci_low``, ``ci_high``)."""
    layers = [r["layer"] for r in rows]
    if band:
        fig.add_trace(
            go.Scatter(
                x=layers + layers[::-1],
                y=[r["ci_high"] for r in rows] + [r["ci_low"] for r in rows][::-1],
                fill="toself",
                fillcolor=rgba(color, 0.18),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=[r["accuracy"] for r in rows],
            mode="lines+markers",
            name=name,
            line={"color": color, "width": 2.5},
            marker={"size": 6},
        )
    )


def plot_layerwise(result: LayerwiseResult) -> go.Figure:
    """Probe accuracy vs layer with its 95% band, the control task, majority and BoW lines."""
    fig = go.Figure()
    _accuracy_trace(fig, result.rows, "probe accuracy (95% CI)", PALETTE[0])
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
    return themed(fig, title, "layer", "out-of-fold accuracy")


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
    return themed(
        fig,
        "<b>Where each user attribute becomes linearly readable</b> "
        "<span style='font-size:12px'>(0 = majority class, 1 = perfect)</span>",
        "layer",
        "normalised probe accuracy",
    )


def _reading_vs_control(
    attribute: str,
    reading: Sequence[Mapping[str, Any]],
    control: Sequence[Mapping[str, Any]],
    majority: float,
    note: str = "",
) -> go.Figure:
    fig = go.Figure()
    _accuracy_trace(fig, reading, "reading probe (end of read-out suffix)", PALETTE[0])
    _accuracy_trace(fig, control, "control probe (last prompt token)", PALETTE[2])
    fig.add_hline(
        y=majority,
        line={"color": "#444", "dash": "dash", "width": 1.5},
        annotation_text="majority class",
        annotation_position="bottom right",
    )
    fig.update_yaxes(range=[0, 1.02])
    title = f"<b>{attribute}</b>: reading vs control probe{note}"
    return themed(fig, title, "layer", "accuracy")


def plot_reading_vs_control(reading: LayerwiseResult, control: LayerwiseResult) -> go.Figure:
    """TalkTuner's two probes: at the end of a read-out suffix vs at the last prompt token."""
    return _reading_vs_control(
        reading.attribute, reading.rows, control.rows, reading.majority_accuracy
    )


def plot_reader_curves(reader: Reader) -> go.Figure:
    """A dashboard reader's two probes by layer (from its bundle's scores): the reading probe
    at the end of the read-out suffix and the control at the last prompt token, in the chat
    frame the dashboard reads."""
    by_layer = reader.scores.get("by_layer")
    if not by_layer:
        raise ProbesError(f"the {reader.attribute} reader has no per-layer scores; refit it")
    n = reader.scores.get("n_examples")
    note = f" ({n} examples, chat frame)" if n else ""
    return _reading_vs_control(
        reader.attribute,
        by_layer["reading"],
        by_layer["control"],
        float(reader.scores["majority_accuracy"]),
        note,
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
    themed(fig, "<b>Transfer</b>: train on one set, test on another", "", "", height=480)
    fig.update_xaxes(title_text="test on")
    fig.update_yaxes(title_text="train on", col=1)
    fig.update_yaxes(autorange="reversed")
    return fig


def plot_transfer_bars(
    rows: Sequence[dict[str, Any]],
    title: str = "trained on built-in templates, tested on hand-written chatty messages",
    probe_name: str = "probe (layer chosen on the training set)",
) -> go.Figure:
    """Per attribute: probe vs bag-of-words accuracy when trained on one set, tested on another."""
    names = [r["attribute"] for r in rows]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=names,
            y=[r["probe_accuracy"] for r in rows],
            name=probe_name,
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
    return themed(
        fig,
        f"<b>Transfer</b>: {title}",
        "",
        "accuracy on the test corpus",
    )
