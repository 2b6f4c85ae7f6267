"""Report sections for the mediation case studies."""

from __future__ import annotations

from typing import Any

from probes.report.page import Section


def _row(row: dict[str, Any], mediator: str) -> dict[str, Any]:
    return {
        "mediator": mediator,
        "layer": row["layer"],
        "TE": row["te"]["mean"],
        "NIE": row["nie"]["mean"],
        "NIE 95% CI": f"[{row['nie']['ci_low']:.2f}, {row['nie']['ci_high']:.2f}]",
        "NIE p": row["nie"]["p"],
        "NDE": row["nde"]["mean"],
        "TE - (NDE + NIE)": row["mismatch"]["mean"],
        "proportion mediated": row["proportion_mediated"],
        "twins": row["n_twins"],
    }


def mediation_sections(result: dict[str, Any]) -> list[Section]:
    """One section per case study: the per-layer figure and its table."""
    sections = []
    for name, payload in result.items():
        rows = [_row(r, m) for m, layer_rows in payload["results"].items() for r in layer_rows]
        te = payload["results"][next(iter(payload["results"]))][0]["te"]
        sections.append(
            Section(
                title=f"Mediation: {name.replace('_', ' ')}",
                reading=(
                    f"{payload['question']}. TE is the cue's total effect "
                    f"({te['mean']:+.2f}, 95% CI [{te['ci_low']:.2f}, {te['ci_high']:.2f}], "
                    f"p {te['p']:.3g}). NIE sets the mediator in the {payload['x_cue']} twin to "
                    f"its value under the {payload['counterfactual_cue']} twin; NDE does the "
                    "reverse. The mediator is the last token's residual at that layer, either "
                    "only its component along the attribute direction (subspace) or all of it "
                    "(residual). Bands and intervals are bootstrap 95%; p-values are sign-flip "
                    "permutation tests over twins."
                ),
                figures=(f"figures/mediation_{name}",),
                table=tuple(rows),
            )
        )
    return sections
