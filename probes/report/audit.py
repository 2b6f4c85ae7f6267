"""Figures and report sections of the persona audit: the (safety, utility) scatter, PB per group,
tier 1 per persona, the probes' read-out and the mitigation before/after; a three-tier verdict
after Kirk et al. (2023)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from probes.audit.result import AuditResult
from probes.report.page import Section, write_report
from probes.viz.figures import PALETTE, _hex_to_rgba, _layout, save_figure

FIGURES = ("audit_scatter", "audit_pb_groups", "audit_tier1", "audit_mitigation", "audit_readout")
BASELINE_COLOR = "#222222"


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


def plot_scatter(result: dict[str, Any]) -> go.Figure:
    """Each persona's mean refusal log-odds and utility accuracy with 95% bootstrap intervals;
    the shaded band is where tier 1 lets safety sit around the no-persona baseline."""
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
            annotation_position="top left",
            annotation_font={"size": 11, "color": "#2a7a2a"},
        )
    for group, color in colors.items():
        members = [r for r in rows if r["group"] == group]
        xs = [r["safety_log_odds"] for r in members]
        ys = [r["utility"] for r in members]
        baseline = group == "none"
        faint, fainter = _hex_to_rgba(color, 0.4), _hex_to_rgba(color, 0.18)
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
    _layout(fig, title, "mean refusal log-odds (> 0: refusal likelier)", "utility accuracy", 560)
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


def plot_pb_groups(result: dict[str, Any]) -> go.Figure:
    """PB over all identities and within each group, with its interval and the PB that item
    noise alone gives (personas permuted within items)."""
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
    return _layout(
        fig,
        "<b>Personalization bias per group</b> "
        "<span style='font-size:12px'>(RMS distance from the group's mean point; "
        "p: permutation test of PB against item noise)</span>",
        "",
        "PB (refusal rate, utility accuracy)",
    )


def plot_tier1(result: dict[str, Any]) -> go.Figure:
    """Tier 1: each identity's safety shift from the no-persona baseline with its interval,
    the threshold, and (hollow) the shift after the mitigation."""
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
    _layout(
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


def plot_mitigation(result: dict[str, Any]) -> go.Figure:
    """PB over all identities and per group, before and after the mitigation."""
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
    _layout(fig, title, "", "PB (refusal rate, utility accuracy)")
    fig.update_layout(margin={"t": 90})
    return fig


def plot_readout(result: dict[str, Any]) -> go.Figure:
    """What the attribute probes read at the end of each persona's requests: the shift in
    class probability from the no-persona prompts."""
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
    _layout(
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


def write_audit_figures(result: dict[str, Any], folder: Path, png: bool = True) -> list[str]:
    """Write every figure the result has data for; stems relative to the run folder."""
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


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _ci(value: dict[str, float], signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    return f"{value['estimate']:{f}} [{value['low']:{f}}, {value['high']:{f}}]"


def _overview(result: dict[str, Any]) -> Section:
    perm = result["permutation_p"]
    null = result["pb_null"]
    rows = (
        {"measure": "PB over identities [95% CI]", "value": _ci(result["pb"])},
        {
            "measure": "PB from item noise alone (mean, 95th pct)",
            "value": f"{null['mean']:.3f}, {null['q95']:.3f}",
        },
        {"measure": "PB permutation p", "value": null["p"]},
        {"measure": "persona matters for safety (permutation p)", "value": perm["safety_log_odds"]},
        {"measure": "persona matters for utility (permutation p)", "value": perm["utility_margin"]},
        {
            "measure": "identities / requests / questions",
            "value": (
                f"{result['n_identities']} / {result['n_safety_items']} / "
                f"{result['n_utility_items']}"
            ),
        },
    )
    return Section(
        title="Persona audit: does the stated identity move safety and utility?",
        reading=(
            'Every request and question is asked with "I am {persona}." in front (Vijjini et '
            "al. 2024), for 31 identities in 7 groups and without a persona. Safety is the "
            "share of requests where a refusal opening is likelier than a compliance one; "
            "utility is multiple-choice accuracy. PB, the personalization bias, is the RMS "
            "distance of the identities' (safety, utility) points from their mean. Item noise "
            "alone makes PB positive, so read it against the permutation null (personas "
            "shuffled within each item). The permutation tests ask whether the persona matters "
            "at all, on the continuous scores (refusal log-odds, utility log-prob margin)."
        ),
        figures=tuple(
            f for f in result["figures"] if f.endswith(("audit_scatter", "audit_pb_groups"))
        ),
        table=rows,
        note=(
            "On a base model the safety score is a likelihood proxy: compare it between "
            "personas, not its level."
        ),
    )


def _persona_table(result: dict[str, Any]) -> Section:
    rows = tuple(
        {
            "persona": _label(r["persona"]),
            "group": r["group"],
            "utility [95% CI]": _ci(r["utility"]),
            "Δ utility": r["utility_shift"]["estimate"],
            "refusal rate [95% CI]": _ci(r["refusal_rate"]),
            "refusal log-odds": r["safety_log_odds"]["estimate"],
            "Δ log-odds [95% CI]": _ci(r["safety_log_odds_shift"], signed=True),
        }
        for r in result["personas"]
    )
    return Section(
        title="Per persona",
        reading=(
            "Each identity's scores; Δ is the paired shift from the no-persona baseline over "
            "the same items."
        ),
        table=rows,
    )


def _tier1(result: dict[str, Any]) -> Section:
    tier = result["tier1"]
    flagged = [r for r in tier["rows"] if r["flagged"]]
    rows = tuple(
        {
            "persona": _label(r["persona"]),
            "group": r["group"],
            "shift [95% CI]": _ci(r["shift"], signed=True),
            "direction": r["direction"],
        }
        for r in flagged
    ) or ({"result": f"no identity moves safety by more than {tier['max_shift']}"},)
    unit = "mean refusal log-odds (nats)" if tier["metric"] == "log_odds" else "refusal rate"
    return Section(
        title=(
            f"Tier 1, immutable restrictions: {len(flagged)} of {len(tier['rows'])} "
            "identities flagged"
        ),
        reading=(
            "Behaviour that must not move with the user (Kirk et al. 2023): the answer to a "
            "request that should be declined. An identity is flagged when its paired shift in "
            f"{unit} from the no-persona baseline exceeds {tier['max_shift']} in either direction"
            + (" and its 95% bootstrap interval excludes 0" if tier["require_interval"] else "")
            + ". Less refusal is a safety failure for that identity; more refusal withholds "
            "help from it. Hollow diamonds: the same shift after the mitigation."
        ),
        figures=tuple(f for f in result["figures"] if f.endswith("audit_tier1")),
        table=rows,
        note=f"Policy: {result['policy']['source']}. With 31 identities and 95% intervals, about "
        "1.5 identities clear the interval condition by chance; the threshold guards against that.",
    )


def _tier2(result: dict[str, Any]) -> Section:
    rows = tuple(
        {
            "rule": rule["name"],
            "kind": rule["kind"],
            "max": rule["max"],
            "categories": ", ".join(rule["categories"]) or "all",
            "groups": ", ".join(rule["groups"]) or "all",
            "items": rule["n_items"],
            "status": rule["status"],
            "violations": ", ".join(
                f"{_label(v['persona'])} ({v['shift']['estimate']:+.3f})"
                for v in rule.get("violations", [])
            ),
        }
        for rule in result["tier2"]
    ) or ({"result": "the policy sets no optional restrictions"},)
    return Section(
        title="Tier 2, optional restrictions set by the provider",
        reading=(
            "Rules from the TOML policy file: utility_drop (accuracy points lost against no "
            "persona), refusal_drop and refusal_rise (refusal log-odds), each on chosen item "
            "categories and persona groups, with the same interval condition as tier 1 unless "
            "the rule turns it off."
        ),
        table=rows,
    )


def _tier3(result: dict[str, Any]) -> Section:
    tier = result["tier3"]
    rows = []
    for name, value in tier["measures"].items():
        if isinstance(value, dict):
            rows.append({"tailoring": _label(name), **value})
        else:
            rows.append({"tailoring": _label(name), "value": value})
    return Section(
        title="Tier 3, personalization within bounds (information, not failure)",
        reading=(
            "The tailoring the suite measured: how far answers follow the user's dialect and "
            "stated beliefs across twin prompts that differ only in that cue. Tailoring a team "
            "or a spelling to the user is personalization a provider may allow; following a "
            "false belief (echo chamber) is shown here for information and is a candidate for "
            f"a tier-2 rule. Source: {tier['source']}."
        ),
        table=tuple(rows),
    )


def _readout(result: dict[str, Any]) -> Section:
    read = result["readout"]
    accuracy = ", ".join(
        f"{_label(a)} {e['held_out_accuracy']:.2f}" for a, e in read["attributes"].items()
    )
    rows = [
        {
            "check": "named class",
            "persona": _label(r["persona"]),
            "class": f"{r['attribute']}: {_label(r['class'])}",
            "p (persona)": r["p_persona"],
            "p (no persona)": r["p_none"],
            "Δ p": r["shift"],
            "top class": _label(r["top_class"]),
        }
        for r in read["expected"]
    ]
    rows += [
        {
            "check": "largest shift",
            "persona": _label(r["persona"]),
            "class": f"{r['attribute']}: {_label(r['class'])}",
            "Δ p": r["shift"],
        }
        for r in read["highlights"]
    ]
    after = result.get("mitigation", {}).get("readout_after")
    note = ""
    if after and after["expected"]:
        note = "After the mitigation, named-class shifts: " + ", ".join(
            f"{_label(r['persona'])} {r['shift']:+.3f}" for r in after["expected"]
        )
    return Section(
        title="Read-out: what the probes read from the persona",
        reading=(
            f"Linear probes for built-in attributes (layer {read['layer']}, trained on their "
            "datasets' last token; held-out-family accuracy: "
            f"{accuracy}) read at the end of each persona's safety prompts, where the reply "
            "begins. Each cell is the mean class probability minus that of the no-persona "
            "prompts. Named-class rows check that e.g. 'a senior citizen' raises the older-adult "
            "class; the other rows list the largest shifts, including classes the persona never "
            "named (an inferred socioeconomic status or education level)."
        ),
        figures=tuple(f for f in result["figures"] if f.endswith("audit_readout")),
        table=tuple(rows),
        note=note,
    )


def _mitigation(result: dict[str, Any]) -> Section:
    mit = result["mitigation"]
    change = mit["pb_change"]
    after = mit["pb_after"]
    rows = (
        {"measure": "PB before [95% CI]", "value": _ci(result["pb"])},
        {"measure": "PB after [95% CI]", "value": _ci(after["pb"])},
        {"measure": "PB fall (paired bootstrap) [95% CI]", "value": _ci(change, signed=True)},
        {"measure": "PB from item noise alone, after", "value": after["pb_null"]["mean"]},
        {
            "measure": "permutation p, safety / utility, after",
            "value": (
                f"{after['permutation_p']['safety_log_odds']:.3g} / "
                f"{after['permutation_p']['utility_margin']:.3g}"
            ),
        },
        {
            "measure": "tier-1 flags before / after",
            "value": f"{len(result['tier1']['flagged'])} / {len(mit['tier1_after']['flagged'])}",
        },
        {
            "measure": "utility, mean over personas, before / after",
            "value": f"{mit['utility_before']:.3f} / {mit['utility_after']:.3f}",
        },
        {"measure": "utility change [95% CI]", "value": _ci(mit["utility_change"], signed=True)},
        {
            "measure": "no-persona utility before / after",
            "value": f"{mit['baseline_utility_before']:.3f} / {mit['baseline_utility_after']:.3f}",
        },
        {"measure": "KL on neutral text (nats)", "value": mit["neutral_kl"]},
    )
    return Section(
        title="Mitigation: ablating the persona directions",
        reading=(
            "Directions that separate persona prompts from no-persona prompts: for each "
            "identity, its mean last-token residual minus the no-persona mean (each group owns "
            "the span of its identities' directions). At the layer where they are largest, their "
            "span is mean-ablated at the last prompt token (reset to the no-persona mean), and "
            "the audit is re-run. Directions are cross-fitted: each half of the items is "
            "re-scored with directions fitted on the other half. The cost is the change in "
            "utility and the KL of the next token on neutral text."
        ),
        figures=tuple(f for f in result["figures"] if f.endswith("audit_mitigation")),
        table=rows,
        note=f"Method: {mit['method']}; layers {mit['layers']}; {mit['n_directions']} directions.",
    )


def _as_dict(result: AuditResult | dict[str, Any]) -> dict[str, Any]:
    """The JSON structure of a result (a cached stage result is already one)."""
    return result.to_dict() if isinstance(result, AuditResult) else result


def audit_sections(result: AuditResult | dict[str, Any]) -> list[Section]:
    """The audit's sections of a report, in reading order."""
    result = _as_dict(result)
    sections = [_overview(result), _tier1(result), _tier2(result), _tier3(result)]
    if result.get("readout", {}).get("attributes"):
        sections.append(_readout(result))
    if "mitigation" in result:
        sections.append(_mitigation(result))
    else:
        sections.append(
            Section(
                title="Mitigation: not run",
                reading=(
                    "The mitigation re-scores every persona with the persona directions ablated, "
                    "which doubles the audit's cost; this run skipped it (probes run --quick "
                    "does). Run without --quick, or set [audit] mitigation = true, to measure it."
                ),
            )
        )
    sections.append(_persona_table(result))
    return sections


def write_audit_report(
    out: Path, result: AuditResult | dict[str, Any], header: dict[str, Any]
) -> Path:
    """``out/report.html`` of a ``probes audit`` run."""
    result = _as_dict(result)
    return write_report(
        Path(out), f"probes audit: {result['model']}", header, audit_sections(result)
    )
