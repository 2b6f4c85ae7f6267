"""Report sections of the persona audit: a three-tier verdict after Kirk et al. (2023). The
figures they show are built and written by ``probes.viz.audit``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probes.audit.result import AuditResult
from probes.report.page import Section, write_report

# re-exported: ``probes.report`` has always offered the audit figures under this module
from probes.viz.audit import (  # noqa: F401
    BASELINE_COLOR,
    FIGURES,
    plot_mitigation,
    plot_pb_groups,
    plot_readout,
    plot_scatter,
    plot_tier1,
    write_audit_figures,
)


def _label(name: str) -> str:
    """A snake_case name as words."""
    return name.replace("_", " ")


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
