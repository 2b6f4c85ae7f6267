"""Mediation figures: TE, NIE and NDE by layer with 95% bands, one panel per mediator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import plotly.graph_objects as go

from probes.mediation.cases import CaseStudyResult
from probes.mediation.effects import LayerMediation
from probes.viz.export import save_figure
from probes.viz.theme import PALETTE, rgba, themed

# effect name -> (legend label, colour, line dash)
_STYLE = {
    "te": ("total effect (TE)", "#444444", "dash"),
    "nie": ("indirect, through the mediator (NIE)", PALETTE[0], "solid"),
    "nde": ("direct, around the mediator (NDE)", PALETTE[1], "solid"),
}
_TITLES = {"subspace": "attribute subspace", "residual": "whole residual"}


def _band(
    fig: go.Figure, rows: Sequence[LayerMediation], effect: str, col: int, legend: bool
) -> None:
    label, color, dash = _STYLE[effect]
    layers = [r.layer for r in rows]
    est = [getattr(r, effect) for r in rows]
    fig.add_trace(
        go.Scatter(
            x=layers + layers[::-1],
            y=[e.ci_high for e in est] + [e.ci_low for e in est][::-1],
            mode="lines",
            fill="toself",
            fillcolor=rgba(color, 0.15),
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
            legendgroup=effect,
        ),
        row=1,
        col=col,
    )
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=[e.mean for e in est],
            mode="lines+markers",
            name=label,
            legendgroup=effect,
            showlegend=legend,
            line={"color": color, "width": 2.5, "dash": dash},
            marker={"size": 6},
            customdata=[[e.ci_low, e.ci_high, e.p_value] for e in est],
            hovertemplate="layer %{x}: %{y:+.3f} [%{customdata[0]:+.3f}, %{customdata[1]:+.3f}]"
            "<br>p = %{customdata[2]:.4f}<extra></extra>",
        ),
        row=1,
        col=col,
    )


def plot_mediation(
    results: Mapping[str, Sequence[LayerMediation]], title: str = "mediation", subtitle: str = ""
) -> go.Figure:
    """Per layer, TE (dashed), NIE and NDE with 95% bootstrap bands and the mismatch (dotted);
    one panel per mediator.

    TE does not depend on the layer; NIE + NDE = TE wherever the mismatch is zero.
    """
    from plotly.subplots import make_subplots

    names = [name for name, rows in results.items() if rows]
    fig = make_subplots(
        rows=1,
        cols=len(names),
        shared_yaxes=True,
        subplot_titles=[f"mediator: {_TITLES.get(n, n)}" for n in names],
        horizontal_spacing=0.06,
    )
    for col, name in enumerate(names, start=1):
        rows = sorted(results[name], key=lambda r: r.layer)
        for effect in _STYLE:
            _band(fig, rows, effect, col, legend=col == 1)
        fig.add_trace(
            go.Scatter(
                x=[r.layer for r in rows],
                y=[r.mismatch.mean for r in rows],
                mode="lines",
                name="mismatch TE - (NIE + NDE)",
                legendgroup="mismatch",
                showlegend=col == 1,
                line={"color": PALETTE[3], "width": 1.5, "dash": "dot"},
            ),
            row=1,
            col=col,
        )
        fig.add_hline(y=0, line={"color": "#999", "width": 1}, row=1, col=col)
    n_twins = next(iter(results[names[0]])).n_twins
    themed(
        fig,
        f"<b>{title}</b><br><span style='font-size:12px'>{subtitle + '; ' if subtitle else ''}"
        f"mean over {n_twins} twin pairs, 95% bootstrap bands</span>",
        "",
        "effect on the metric",
    )
    fig.update_xaxes(title_text="layer", dtick=2, range=[-0.5, None])
    fig.update_layout(
        width=max(820, 470 * len(names)),
        height=560,
        margin={"t": 100, "b": 150},
        legend={"yanchor": "top", "y": -0.2},
    )
    fig.update_annotations(font={"size": 13})
    return fig


def plot_case_study(result: CaseStudyResult) -> go.Figure:
    """:func:`plot_mediation` of a case study's results, titled by the case."""
    case = result.case
    return plot_mediation(
        result.results, title=f"{case.name}: mediation by layer", subtitle=case.question
    )


def save_case_study_figure(result: CaseStudyResult, folder: str | Path) -> list[Path]:
    """Write ``mediation_{case}.html/.json`` (and PNG if possible) into ``folder``."""
    return save_figure(plot_case_study(result), Path(folder) / f"mediation_{result.case.name}")
