"""Figures for interventions: dose-response with damage, effect vs damage, patching heatmap."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from probes.interventions.patching import PatchingResult
from probes.interventions.steering import SweepResult
from probes.viz.theme import FONT, PALETTE, themed


def _by_layer(result: SweepResult, kind: str, layer: int) -> list[dict]:
    rows = [r for r in result.rows if r["kind"] == kind and r["layer"] == layer]
    zero = {"strength": 0.0, "mean_metric": float(result.baseline.mean()), "kl_mean": 0.0}
    return sorted([*rows, zero], key=lambda r: r["strength"])


def plot_dose_response(result: SweepResult, metric_label: str = "answer log-odds") -> go.Figure:
    """Metric vs strength per layer (random same-norm control dotted) and KL beside it."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(f"mean {metric_label}", "damage: KL on neutral text (nats)"),
        horizontal_spacing=0.12,
    )
    for i, layer in enumerate(result.layers):
        color = PALETTE[i % len(PALETTE)]
        for kind, dash in (("direction", "solid"), ("random", "dot")):
            rows = _by_layer(result, kind, layer)
            x = [r["strength"] for r in rows]
            name = f"layer {layer}" if kind == "direction" else f"layer {layer}, random"
            for col, key in ((1, "mean_metric"), (2, "kl_mean")):
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=[max(r[key], 1e-4) if col == 2 else r[key] for r in rows],
                        mode="lines+markers",
                        name=name,
                        legendgroup=name,
                        showlegend=col == 1 and kind == "direction",
                        line={
                            "color": color,
                            "dash": dash,
                            "width": 2 if kind == "direction" else 1,
                        },
                        marker={"size": 5},
                    ),
                    row=1,
                    col=col,
                )
    fig.add_hline(y=0, line={"color": "#888", "width": 1}, row=1, col=1)
    title = (
        f"<b>Steering {result.attribute}</b> ({result.method}, {result.source} → {result.target});"
        " dotted: random direction, same norm"
    )
    themed(fig, title, "", "", height=470)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text=f"strength (x typical norm), towards {result.target}")
    fig.update_layout(width=1000, font=FONT)
    return fig


def plot_pareto(result: SweepResult) -> go.Figure:
    """Effect (mean shift of the metric, signed towards the target) against damage (KL)."""
    fig = go.Figure()
    for i, layer in enumerate(result.layers):
        rows = [r for r in result.rows if r["kind"] == "direction" and r["layer"] == layer]
        fig.add_trace(
            go.Scatter(
                x=[max(r["kl_mean"], 1e-4) for r in rows],
                y=[abs(r["mean_shift"]) for r in rows],
                mode="markers",
                name=f"layer {layer}",
                marker={"color": PALETTE[i % len(PALETTE)], "size": 9},
                text=[f"strength {r['strength']:+g}" for r in rows],
            )
        )
    rand = [r for r in result.rows if r["kind"] == "random"]
    fig.add_trace(
        go.Scatter(
            x=[max(r["kl_mean"], 1e-4) for r in rand],
            y=[abs(r["mean_shift"]) for r in rand],
            mode="markers",
            name="random direction (all layers)",
            marker={"color": "#999", "size": 7, "symbol": "x"},
            text=[f"layer {r['layer']}, strength {r['strength']:+g}" for r in rand],
        )
    )
    fig.update_xaxes(type="log")
    return themed(
        fig,
        f"<b>Effect vs damage</b>: steering {result.attribute}; upper left is better",
        "KL on neutral text (nats, log scale)",
        "|mean shift of answer log-odds|",
    )


def plot_patching(result: PatchingResult) -> go.Figure:
    """Layer x token-group heatmap of the fraction of the cue's effect restored."""
    fig = go.Figure(
        go.Heatmap(
            z=result.restored,
            x=result.columns,
            y=[f"{result.layers[i]}" for i in range(len(result.layers))],
            colorscale="RdBu",
            zmid=0,
            zmin=-1,
            zmax=1,
            colorbar={"title": {"text": "fraction<br>restored"}},
            hovertemplate="layer %{y}<br>%{x}<br>restored %{z:.2f}<extra></extra>",
        )
    )
    title = (
        f"<b>Activation patching</b>: {result.source_cue} twin's {result.site} written into the "
        f"{result.base_cue} twin (n={result.n_pairs} pairs)"
    )
    themed(fig, title, "token group", "layer", height=560)
    fig.update_yaxes(autorange=True, type="category")
    return fig
