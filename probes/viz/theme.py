"""The look every figure shares: palette, font, and the layout applied to each."""

from __future__ import annotations

import plotly.graph_objects as go

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


FONT = {"family": "Helvetica, Arial, sans-serif", "size": 14}


def themed(fig: go.Figure, title: str, x: str, y: str, height: int = 460) -> go.Figure:
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


def rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
