"""Figures of the persona audit: the (safety, utility) scatter, PB per group, tier 1 per
persona, the probes' read-out and the mitigation before/after. Builders return figures;
:func:`write_audit_figures` is the one function here that writes files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from probes.audit.result import AuditResult
from probes.viz.export import save_figure
from probes.viz.theme import PALETTE, rgba, themed

FIGURES = ("audit_scatter", "audit_pb_groups", "audit_tier1", "audit_mitigation", "audit_readout")
BASELINE_COLOR = "#222222"


def _as_dict(result: AuditResult | dict[str, Any]) -> dict[str, Any]:
    """The JSON structure of a result (a cached stage result is already one)."""
    return result.to_dict() if isinstance(result, AuditResult) else result


def _group_colors(groups: Sequence[str]) -> dict[str, str]:
    names = [g for g in dict.fromkeys(groups) if g != "none"]
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(names)} | {"none": BASELINE_COLOR}


def _label(name: str) -> str:
    return name.replace("_", " ")


def _err(value: dict[str, float]) -> tuple[float, float]:
    return value["high"] - value["estimate"], value["estimate"] - value["low"]


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def plot_scatter(result: AuditResult | dict[str, Any]) -> go.Figure:
    """Each persona's mean refusal log-odds and utility accuracy with 95% bootstrap intervals;
    the shaded band is where tier 1 lets safety sit around the no-persona baseline."""
    result = _as_dict(result)
    rows = result["personas"]
    colors = _group_colors([r["group"] for r in rows])
    fig = go.Figure()
    tier = result["tier1"]
    base = next(r for r in rows if r["group"] == "none")
    if tier["metric"] == "log_odds":
        centre = base["safety_log_odds"]["estimate"]
        fig.add_vrect(
            x0=centre - tier["max_shift"],
            x1=centre + tier["max_shift"],
            fillcolor="#2ca02c",
            opacity=0.07,
            line_width=0,
            annotation_text="tier-1 band",
            annotation_position="bottom left",  # persona labels crowd the top of the plot
            annotation_font={"size": 11, "color": "#2a7a2a"},
        )
    for group, color in colors.items():
        members = [r for r in rows if r["group"] == group]
        xs = [r["safety_log_odds"] for r in members]
        ys = [r["utility"] for r in members]
        baseline = group == "none"
        faint, fainter = rgba(color, 0.4), rgba(color, 0.18)
        fig.add_trace(
            go.Scatter(
                x=[x["estimate"] for x in xs],
                y=[y["estimate"] for y in ys],
                mode="markers",
                name="no persona" if baseline else _label(group),
                text=[r["text"] for r in members],
                hovertemplate="%{text}<br>refusal log-odds %{x:.3f}<br>utility %{y:.3f}"
                "<extra></extra>",
                marker={
                    "color": color,
                    "size": 17 if baseline else 10,
                    "symbol": "star" if baseline else "circle",
                    "line": {"color": "white", "width": 1},
                },
                error_x=_error_bars(xs, faint),
                error_y=_error_bars(ys, fainter),
            )
        )
    flagged = set(tier["flagged"])
    ident = [r for r in rows if r["group"] != "none"]
    lowest = sorted(ident, key=lambda r: r["utility"]["estimate"])[:2]
    named = [r for r in ident if r["persona"] in flagged or r in lowest]
    for k, r in enumerate(sorted(named, key=lambda r: r["safety_log_odds"]["estimate"])):
        fig.add_annotation(
            x=r["safety_log_odds"]["estimate"],
            y=r["utility"]["estimate"],
            text=_label(r["persona"]),
            showarrow=True,
            arrowhead=0,
            arrowcolor="#999",
            ax=24,
            ay=-22 if k % 2 == 0 else 24,
            font={"size": 11, "color": "#333"},
        )
    pb = result["pb"]
    title = (
        "<b>Persona audit</b>: safety and utility per stated identity<br>"
        f"<span style='font-size:12px'>{result['n_identities']} identities, "
        f"{result['n_safety_items']} requests, {result['n_utility_items']} questions; bars: 95% "
        f"bootstrap over items; PB on (refusal rate, accuracy) {pb['estimate']:.3f} "
        f"[{pb['low']:.3f}, {pb['high']:.3f}]</span>"
    )
    themed(fig, title, "mean refusal log-odds (> 0: refusal likelier)", "utility accuracy", 560)
    # Accuracy lives in [0, 1]: never let the axis run past it (with few items every persona
    # can sit at 1.0, and autorange would then show 0.5 to 2).
    lows = [r["utility"]["low"] for r in rows] + [r["utility"]["estimate"] for r in rows]
    highs = [r["utility"]["high"] for r in rows] + [r["utility"]["estimate"] for r in rows]
    bottom = max(-0.02, min(lows) - 0.05)
    fig.update_yaxes(range=[min(bottom, 0.8), min(1.02, max(highs) + 0.05)])
    fig.update_layout(
        width=960,
        margin={"t": 90, "b": 70, "r": 190},
        legend={"orientation": "v", "x": 1.02, "y": 1.0, "yanchor": "top"},
    )
    return fig


def _error_bars(values: Sequence[dict[str, float]], color: str) -> dict[str, Any]:
    return {
        "type": "data",
        "symmetric": False,
        "array": [_err(v)[0] for v in values],
        "arrayminus": [_err(v)[1] for v in values],
        "thickness": 1.2,
        "width": 0,
        "color": color,
    }


def plot_pb_groups(result: AuditResult | dict[str, Any]) -> go.Figure:
    """PB over all identities and within each group, with its interval and the PB that item
    noise alone gives (personas permuted within items)."""
    result = _as_dict(result)
    names = ["all", *result["by_group"]]
    entries = [{**result["pb"], "null": result["pb_null"]}, *result["by_group"].values()]
    ticks = [
        f"{_label(n)}<br><sub>p={e['null']['p']:.2g}</sub>"
        for n, e in zip(names, entries, strict=True)
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=ticks,
            y=[e["estimate"] for e in entries],
            name="PB (95% bootstrap interval)",
            marker_color=[BASELINE_COLOR]
            + [PALETTE[i % len(PALETTE)] for i in range(len(names) - 1)],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [_err(e)[0] for e in entries],
                "arrayminus": [_err(e)[1] for e in entries],
            },
        )
    )
    fig.add_trace(
        go.Scatter(
            x=ticks,
            y=[e["null"]["mean"] for e in entries],
            mode="markers",
            name="PB from item noise alone (permutation mean)",
            marker={"symbol": "line-ew-open", "size": 30, "color": "#888", "line": {"width": 3}},
        )
    )
    top = max(e["high"] for e in entries)
    fig.update_yaxes(range=[0, top * 1.25 + 1e-9])
    return themed(
        fig,
        "<b>Personalization bias per group</b> "
        "<span style='font-size:12px'>(RMS distance from the group's mean point; "
        "p: permutation test of PB against item noise)</span>",
        "",
        "PB (refusal rate, utility accuracy)",
    )


def plot_tier1(result: AuditResult | dict[str, Any]) -> go.Figure:
    """Tier 1: each identity's safety shift from the no-persona baseline with its interval,
    the threshold, and (hollow) the shift after the mitigation."""
    result = _as_dict(result)
    tier = result["tier1"]
    rows = tier["rows"]
    labels = [_label(r["persona"]) for r in rows]
    colors = ["#d62728" if r["flagged"] else "#1f77b4" for r in rows]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[r["shift"]["estimate"] for r in rows],
            y=labels,
            mode="markers",
            name="shift vs no persona (95% CI); red: flagged",
            marker={"color": colors, "size": 8},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [_err(r["shift"])[0] for r in rows],
                "arrayminus": [_err(r["shift"])[1] for r in rows],
                "thickness": 1.2,
                "width": 0,
            },
        )
    )
    after = result.get("mitigation", {}).get("tier1_after")
    if after:
        fig.add_trace(
            go.Scatter(
                x=[r["shift"]["estimate"] for r in after["rows"]],
                y=[_label(r["persona"]) for r in after["rows"]],
                mode="markers",
                name="after mitigation",
                marker={"symbol": "diamond-open", "size": 8, "color": "#555"},
            )
        )
    for i in range(1, len(rows)):  # thin rules between persona groups
        if rows[i]["group"] != rows[i - 1]["group"]:
            fig.add_hline(y=i - 0.5, line={"color": "#ccc", "width": 1})
    for sign in (-1, 1):
        fig.add_vline(x=sign * tier["max_shift"], line={"color": "#d62728", "dash": "dash"})
    fig.add_vline(x=0, line={"color": "#999", "width": 1})
    unit = "mean refusal log-odds" if tier["metric"] == "log_odds" else "refusal rate"
    themed(
        fig,
        f"<b>Tier 1</b>: safety must not move with the user "
        f"<span style='font-size:12px'>(|shift| > {tier['max_shift']}"
        f"{' and CI excludes 0' if tier['require_interval'] else ''}: flagged)</span>",
        f"shift in {unit} vs no persona",
        "",
        height=max(460, 20 * len(rows) + 200),
    )
    fig.update_yaxes(autorange="reversed", tickfont={"size": 11})
    fig.update_layout(
        margin={"l": 150, "b": 110}, legend={"y": -0.08 - 60 / (20 * len(rows) + 200)}
    )
    return fig


def plot_mitigation(result: AuditResult | dict[str, Any]) -> go.Figure:
    """PB over all identities and per group, before and after the mitigation."""
    result = _as_dict(result)
    mit = result["mitigation"]
    names = ["all", *result["by_group"]]
    fig = go.Figure()
    for label, color, summary in (
        ("before", PALETTE[0], result),
        ("directions ablated", PALETTE[4], mit["pb_after"]),
    ):
        entries = [summary["pb"], *(summary["by_group"][g] for g in names[1:])]
        fig.add_trace(
            go.Bar(
                x=[_label(n) for n in names],
                y=[e["estimate"] for e in entries],
                name=label,
                marker_color=color,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [_err(e)[0] for e in entries],
                    "arrayminus": [_err(e)[1] for e in entries],
                },
            )
        )
    fig.update_layout(barmode="group")
    change = mit["utility_change"]
    layers = ", ".join(str(layer) for layer in mit["layers"])
    title = (
        f"<b>Mitigation</b>: persona directions mean-ablated at layer {layers}<br>"
        f"<span style='font-size:12px'>PB {result['pb']['estimate']:.3f} → "
        f"{mit['pb_after']['pb']['estimate']:.3f}; utility {change['estimate']:+.3f} "
        f"[{change['low']:+.3f}, {change['high']:+.3f}]; KL on neutral text "
        f"{mit['neutral_kl']:.3f} nats</span>"
    )
    themed(fig, title, "", "PB (refusal rate, utility accuracy)")
    fig.update_layout(margin={"t": 90})
    return fig


def plot_readout(result: AuditResult | dict[str, Any]) -> go.Figure:
    """What the attribute probes read at the end of each persona's requests: the shift in
    class probability from the no-persona prompts."""
    result = _as_dict(result)
    read = result["readout"]
    columns, values = [], []
    personas = [p for p in next(iter(read["attributes"].values()))["shift"] if p != "none"]
    for name, entry in read["attributes"].items():
        for k, cls in enumerate(entry["classes"]):
            columns.append(f"{_label(name)}: {_label(cls)}")
            values.append([entry["shift"][p][k] for p in personas])
    z = [list(row) for row in zip(*values, strict=True)]
    top = max((abs(v) for row in z for v in row), default=1.0) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=[_label(p) for p in personas],
            zmin=-top,
            zmax=top,
            colorscale="RdBu",
            reversescale=True,
            colorbar={"title": {"text": "Δ p", "side": "right"}, "thickness": 14},
            hovertemplate="%{y}<br>%{x}<br>Δ p %{z:+.3f}<extra></extra>",
        )
    )
    themed(
        fig,
        f"<b>Read-out</b>: what the probes (layer {read['layer']}) read from the persona "
        "<span style='font-size:12px'>(class probability minus no persona)</span>",
        "",
        "",
        height=max(460, 19 * len(personas) + 230),
    )
    fig.update_yaxes(autorange="reversed", tickfont={"size": 11})
    fig.update_xaxes(tickangle=-40, tickfont={"size": 11})
    fig.update_layout(margin={"l": 150, "b": 150}, width=900)
    return fig


def write_audit_figures(
    result: AuditResult | dict[str, Any], folder: Path, png: bool = True
) -> list[str]:
    """Write every figure the result has data for; stems relative to the run folder."""
    result = _as_dict(result)
    plots = {"audit_scatter": plot_scatter, "audit_pb_groups": plot_pb_groups}
    plots["audit_tier1"] = plot_tier1
    if "mitigation" in result:
        plots["audit_mitigation"] = plot_mitigation
    if result.get("readout", {}).get("attributes"):
        plots["audit_readout"] = plot_readout
    stems = []
    for name, plot in plots.items():
        save_figure(plot(result), Path(folder) / name, png=png)
        stems.append(f"{Path(folder).name}/{name}")
    return stems
