"""Which selection rule picks settings that hold up on another style? Validation styles only.

The transfer stage chooses (setting, C, layer) on the validation styles (the conversation set and
the chatty corpus) and only then reads the held-out corpus. This script compares candidate
rules for that choice without the held-out corpus: each rule chooses on one validation style
alone, and is scored by the accuracy of its choice on the *other* validation style (each
probe trained without the style it is scored on). A rule that chases one style's noise scores
low on the other. The held-out corpus is never loaded.

    python scripts/selection_rules.py            # every attribute with two validation styles
    python scripts/selection_rules.py --attributes age socioeconomic

Stores come from the activation cache when `probes run` has filled it (PROBES_HOME).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Row = dict[str, Any]
Rule = Callable[[list[Row], str], Row]


def _acc(r: Row, style: str) -> float:
    return float(r["per_style"][style])


def _ll(r: Row, style: str) -> float:
    return float(r["per_style_log_loss"][style])


def by_accuracy_earliest(grid: list[Row], style: str) -> Row:
    """The stage's rule before this study: best accuracy, ties to the earlier layer, smaller C."""
    return max(grid, key=lambda r: (round(_acc(r, style), 12), -r["layer"], -r["C"]))


def by_accuracy_then_log_loss(grid: list[Row], style: str) -> Row:
    """Best accuracy; ties to the lower log-loss."""
    return max(grid, key=lambda r: (round(_acc(r, style), 12), -_ll(r, style)))


def by_log_loss(grid: list[Row], style: str) -> Row:
    """Lowest log-loss (a proper scoring rule: it does not tie where accuracy saturates)."""
    return min(grid, key=lambda r: (_ll(r, style), r["layer"], r["C"]))


def _neighbours(grid: list[Row], r: Row) -> list[Row]:
    return [
        o
        for o in grid
        if o["setting"] == r["setting"] and o["C"] == r["C"] and abs(o["layer"] - r["layer"]) <= 1
    ]


def by_smoothed_accuracy(grid: list[Row], style: str) -> Row:
    """Best accuracy averaged over the layer and its two neighbours; ties to the earlier layer."""
    return max(
        grid,
        key=lambda r: (
            round(float(np.mean([_acc(o, style) for o in _neighbours(grid, r)])), 12),
            -r["layer"],
            -r["C"],
        ),
    )


def by_smoothed_log_loss(grid: list[Row], style: str) -> Row:
    """Lowest log-loss averaged over the layer and its two neighbours."""
    return min(
        grid,
        key=lambda r: (float(np.mean([_ll(o, style) for o in _neighbours(grid, r)])), r["layer"]),
    )


RULES: dict[str, Rule] = {
    "accuracy, ties to earlier layer (before)": by_accuracy_earliest,
    "accuracy, ties to lower log-loss": by_accuracy_then_log_loss,
    "log-loss": by_log_loss,
    "accuracy over layer +-1": by_smoothed_accuracy,
    "log-loss over layer +-1": by_smoothed_log_loss,
}


def cross_style_scores(grid: list[Row], validation: Sequence[str]) -> dict[str, list[float]]:
    """Per rule: the other style's accuracy of what it chose on each style alone."""
    out: dict[str, list[float]] = {name: [] for name in RULES}
    for chooser in validation:
        for other in validation:
            if other == chooser:
                continue
            for name, rule in RULES.items():
                out[name].append(_acc(rule(grid, chooser), other))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--attributes",
        nargs="+",
        default=["dialect_us_uk", "age", "gender", "education", "socioeconomic", "proficiency"],
    )
    args = parser.parse_args()

    from probes.models.loading import load_model
    from probes.pipeline.config import ProbeStageConfig, TransferStageConfig
    from probes.pipeline.transfer import _stores, _styles_for
    from probes.probing.selection import Style, select_settings, setting_key

    cfg, pcfg = TransferStageConfig(), ProbeStageConfig()
    model = load_model()
    settings = [setting_key(p, f) for p in cfg.positions for f in cfg.frames]
    table: dict[str, dict[str, list[float]]] = {}
    chosen: dict[str, dict[str, str]] = {}
    for name in args.attributes:
        parts = _styles_for(name, cfg, pcfg)
        if len(parts["validation"]) < 2:
            print(f"{name}: fewer than two validation styles, skipped")
            continue
        styles = [Style(k, _stores(model, ds, settings, pcfg)) for k, ds in parts["styles"].items()]
        sel = select_settings(styles, validation=parts["validation"], Cs=cfg.Cs, attribute=name)
        table[name] = cross_style_scores(sel.grid, parts["validation"])
        chosen[name] = {}
        for rule_name, rule in RULES.items():
            # On both styles together (the mean columns), as the stage does.
            both = [
                {
                    **r,
                    "per_style": {"both": r["validation_accuracy"]},
                    "per_style_log_loss": {"both": r["validation_log_loss"]},
                }
                for r in sel.grid
            ]
            c = rule(both, "both")
            chosen[name][rule_name] = f"{c['setting']} C={c['C']:g} L{c['layer']}"
    names = list(table)
    print("\nother style's accuracy of the choice made on one validation style alone")
    print("(each cell: the mean over the two directions; the test corpus is not read)\n")
    print("| rule | " + " | ".join(names) + " | mean |")
    print("|---|" + "---:|" * (len(names) + 1))
    for rule_name in RULES:
        cells = [float(np.mean(table[n][rule_name])) for n in names]
        print(
            f"| {rule_name} | "
            + " | ".join(f"{c:.3f}" for c in cells)
            + f" | **{np.mean(cells):.3f}** |"
        )
    print("\nwhat each rule chooses on both validation styles (the stage's input)\n")
    print("| rule | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for rule_name in RULES:
        print(f"| {rule_name} | " + " | ".join(chosen[n][rule_name] for n in names) + " |")


if __name__ == "__main__":
    main()
