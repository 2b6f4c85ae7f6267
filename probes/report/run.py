"""Turn a `probes run` results dict into the sections of its report.html, top to bottom."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probes.report.page import Section, write_report


def _first_look(look: dict[str, Any]) -> Section:
    rows = [
        {
            "cue": cue,
            "prompt": pair[cue]["prompt"],
            "UK-vs-US log-odds": pair[cue]["uk_vs_us_log_odds"],
            "greedy continuation": pair[cue]["greedy"],
        }
        for pair in look["pairs"]
        for cue in ("uk", "us")
    ]
    return Section(
        title="First look: does the answer follow the user's dialect?",
        reading=(
            "The same request written with UK or US spelling and words. Positive log-odds mean a "
            "UK club is more likely next than a US team. The answer follows the cue in "
            f"{look['pairs_where_answer_follows_cue']}/{look['n_pairs']} pairs."
        ),
        table=tuple(rows),
    )


def _probes(probes: dict[str, Any]) -> list[Section]:
    sections = [
        Section(
            title="Probes: where does the model represent what it inferred?",
            reading=(
                "Held-out-family accuracy of a linear probe at every layer, one line per "
                "attribute. The table gives the best layer, its 95% bootstrap interval, the "
                "selectivity over a shuffled-label control, the majority class and a "
                "bag-of-words baseline on the raw text: a probe is only interesting where it "
                "beats both."
            ),
            figures=("figures/probe_overview",),
            table=tuple(probes["summary"]),
        )
    ]
    per_attribute = tuple(f"figures/probe_{name}" for name in probes["results"])
    sections.append(
        Section(
            title="Probes per attribute, with their controls",
            reading=(
                "Each figure: probe accuracy with its band, the shuffled-label control and the "
                "majority class. The gap between probe and control is the selectivity."
            ),
            figures=per_attribute,
        )
    )
    reading = probes.get("reading_probe")
    if reading:
        attribute = reading["result"]["attribute"]
        sections.append(
            Section(
                title="Reading probe vs control probe",
                reading=(
                    f"TalkTuner's reading probe reads the residual at the end of the suffix "
                    f"{reading['suffix']!r}; the control probe reads the last prompt token."
                ),
                figures=(f"figures/reading_vs_control_{attribute}",),
            )
        )
    return sections


def _transfer(transfer: dict[str, Any]) -> list[Section]:
    """The headline: transfer to the held-out corpus at settings chosen on other styles."""
    warned = [r["attribute"] for r in transfer["summary"] if r["warning"]]
    rows = [
        {
            "attribute": r["attribute"],
            "test": r["test"],
            "n": r["n_test"],
            "in-distribution": r["in_distribution"],
            "chosen (setting, C, layer)": f"{r['setting']}, {r['C']:g}, {r['layer']}",
            "transfer (headline)": r["transfer"],
            "95% CI (families resampled)": f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
            "best layer on the test (optimistic)": (
                f"{r['best_layer_accuracy']:.3f} ({r['best_layer']})"
            ),
            "bag of words": r["bow_accuracy"],
            "probe trained in-set (CV)": r["in_set_accuracy"],
            "ECE": r["ece"],
            "chance": r["chance"],
            "warning": "in-distribution > transfer + 20 points" if r["warning"] else "",
        }
        for r in transfer["summary"]
    ]
    reasons = "; ".join(
        f"{name}: {unit['selection']['reason']}"
        for name, unit in transfer["results"].items()
        if "selection" in unit
    )
    sections = [
        Section(
            title="Transfer: do the probes read the attribute in text nobody templated?",
            reading=(
                "Position, frame, regularisation and layer are chosen by leave-one-style-out "
                "on the training styles (templated set, conversation set, hand-written chatty "
                "corpus), never on the test. One probe is then trained on every style and "
                "scored once on the hand-written held-out conversations: that accuracy at the "
                "chosen layer is the headline; its interval resamples whole families. The best "
                "layer on the test itself is optimistic, since it is chosen on the test. Bag of "
                "words is trained and tested the same way; the in-set probe is cross-validated "
                "on the test corpus itself, for scale. ECE is the expected calibration error "
                "of the headline probe. Why each setting was chosen: " + reasons + "."
            ),
            figures=("figures/transfer_heldout",),
            table=tuple(rows),
            note=(
                f"In-distribution accuracy exceeds transfer by more than 20 points for: "
                f"{', '.join(warned)}."
                if warned
                else ""
            ),
        )
    ]
    readouts = transfer.get("readout") or []
    if readouts:
        sections.append(
            Section(
                title="Does the probe's reading predict the tailoring?",
                reading=(
                    "Per behaviour item: the chosen probe's log-odds for the cue that raises "
                    "the positive answers (at the chosen layer, read on the prompt) against the "
                    "answer-set log-odds. Pearson's r with a 95% interval that resamples twin "
                    "pairs. For scale, Chen et al. (2025, persona vectors) report r = 0.75 to "
                    "0.83 between a last-prompt-token projection and trait expression."
                ),
                table=tuple(
                    {
                        "attribute": ro["attribute"],
                        "items": ro["n_items"],
                        "layer": ro["layer"],
                        "setting": ro["setting"],
                        "r": ro["r"],
                        "95% CI": f"[{ro['ci_low']:.2f}, {ro['ci_high']:.2f}]",
                        "Spearman": ro["spearman"],
                    }
                    for ro in readouts
                ),
            )
        )
    return sections


def _interventions(result: dict[str, Any]) -> list[Section]:
    sections = []
    attribute = result["attribute"]
    steering = result.get("steering")
    if steering:
        summary = steering["summary"]
        rows = [
            {"setting": name, **{k: v for k, v in row.items() if k != "kind"}}
            for name in ("towards_target", "towards_source")
            if (row := summary.get(name))
        ]
        sections.append(
            Section(
                title=f"Steering {attribute}: dose-response and damage",
                reading=(
                    "Left: the answer log-odds as a direction fitted on the probe dataset is "
                    "added at one layer (strength in units of that layer's typical residual "
                    "norm); dotted lines add a random direction of the same norm. Right: the KL "
                    "of the next-token distribution on neutral text from the unsteered model. "
                    f"The table gives the best settings with mean KL <= {summary['kl_max']} "
                    "nats: the fraction of items leaning the other way that flip, and how much "
                    "the random control moves the metric relative to the direction."
                ),
                figures=(f"figures/steer_{attribute}", f"figures/steer_{attribute}_pareto"),
                table=tuple(rows),
            )
        )
        if steering.get("samples"):
            sections.append(
                Section(
                    title="Steered generations (greedy), for reading",
                    reading="The same prompts steered towards each label and unsteered (0).",
                    table=tuple(steering["samples"]),
                )
            )
    patching = result.get("patching")
    if patching:
        sections.append(
            Section(
                title=f"Activation patching: where the {attribute} cue enters",
                reading=(
                    "Each cell writes the other twin's residual (at the start of a layer) into "
                    "one group of token positions and reports the fraction of the cue's effect "
                    "on the answer log-odds that this restores. Early layers carry the effect "
                    "at the cue tokens; where the last token's column turns on, the model has "
                    "moved the inferred attribute to where the answer is read."
                ),
                figures=(f"figures/patch_{attribute}",),
                table=(
                    {
                        "twin pairs": patching["n_pairs"],
                        "cue effect (log-odds)": patching["total_effect"],
                        "pairs skipped (unequal length)": patching["skipped_pairs_unequal_length"],
                    },
                ),
            )
        )
    erasure = result.get("erasure")
    if erasure:
        band = erasure["band"]
        sections.append(
            Section(
                title="Concept erasure (LEACE)",
                reading=(
                    f"LEACE fitted at layer {erasure['erased_layer']} on half of the template "
                    "families and applied at every position there; fresh probes (held-out "
                    "families) on the other half at that layer and later ones, before and "
                    f"after. Chance is {erasure['chance']:.3f}; a probe trained on the rows the "
                    "eraser was fitted on scores "
                    f"{erasure['in_sample_accuracy_after']:.3f} on them. Then the cue's effect "
                    f"on the answer with layers {band['band'][0]}-{band['band'][-1]} erased or "
                    "with their mean-difference direction ablated: "
                    f"{band['remaining_erased']:.0%} and {band['remaining_ablated']:.0%} remain."
                ),
                table=tuple(erasure["rows"]),
            )
        )
    return sections


def _readers(readers: dict[str, Any]) -> list[Section]:
    """The dashboard's readers: TalkTuner's reading probe against its control, per attribute."""
    rows = [
        {
            "attribute": r["attribute"],
            "classes": len(r["classes"]),
            "reading layer": r["reading_layer"],
            "reading accuracy": r["reading_accuracy"],
            "control layer": r["control_layer"],
            "control accuracy": r["control_accuracy"],
            "majority": r["majority_accuracy"],
        }
        for r in readers["summary"]
    ]
    figures = tuple(
        f"figures/reader_{r['attribute']}" for r in readers["summary"] if "by_layer" in r
    )
    return [
        Section(
            title="Readers: reading probe vs control probe (the dashboard's probes)",
            reading=(
                "Per attribute, in the frame the dashboard chats in: TalkTuner's reading probe "
                "reads the residual at the end of the read-out suffix, the control probe the "
                "last prompt token of the same pass. Accuracy on held-out template families; "
                "each reader uses the earliest layer within 0.02 of its best."
            ),
            figures=figures,
            table=tuple(rows),
        )
    ]


def build_sections(stages: dict[str, Any]) -> list[Section]:
    """Every section whose stage ran, in reading order."""
    sections: list[Section] = []
    if "dialect_first_look" in stages:
        sections.append(_first_look(stages["dialect_first_look"]))
    if "transfer" in stages:
        sections += _transfer(stages["transfer"])
    if "probes" in stages:
        sections += _probes(stages["probes"])
    if "interventions" in stages:
        sections += _interventions(stages["interventions"])
    if "mediation" in stages:
        from probes.report.mediation import mediation_sections

        sections += mediation_sections(stages["mediation"])
    if "audit" in stages:
        from probes.report.audit import audit_sections

        sections += audit_sections(stages["audit"])
    if "readers" in stages and stages["readers"].get("summary"):
        sections += _readers(stages["readers"])
    return sections


def write_run_report(out: Path, results: dict[str, Any]) -> Path:
    """report.html for a finished run folder."""
    header = {
        "model": results["model"],
        "probes version": results["probes_version"],
        "python": results["python"],
        "torch": results["torch"],
        "quick": results["quick"],
        "seconds": {k: f"{v:.1f}" for k, v in results["seconds"].items()},
        "reused from an earlier run": ", ".join(results.get("reused", [])) or "none",
        "config": results["config"],
    }
    title = f"probes run: {results['model']['name']}"
    return write_report(out, title, header, build_sections(results["stages"]))
