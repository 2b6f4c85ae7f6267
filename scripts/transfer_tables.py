"""Print the README's transfer and in-distribution tables from a `probes run` folder.

    python scripts/transfer_tables.py runs/heldout

The transfer table is the headline: settings chosen on other styles, one score on the held-out
corpus. The in-distribution table below it carries a warning where in-distribution accuracy
exceeds transfer by more than 20 points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAMES = {
    "dialect": "dialect (US/UK)",
    "proficiency": "English proficiency",
    "belief": "stated belief true/false",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a probes run folder (holds results.json)")
    parser.add_argument(
        "--in-distribution",
        default=None,
        help="results.json of a run whose probes stage gives the in-distribution table "
        "(default: this run's own probes stage)",
    )
    args = parser.parse_args()
    results = json.loads((Path(args.run) / "results.json").read_text())
    inside = results
    if args.in_distribution:
        inside = json.loads(Path(args.in_distribution).read_text())
    transfer = results["stages"]["transfer"]
    rows = transfer["summary"]
    print(
        "| attribute | test (n) | chosen setting, C, layer | transfer [95% CI] | best layer on "
        "the test (optimistic) | bag of words | probe trained in-set (CV) | ECE | chance |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {NAMES.get(r['attribute'], r['attribute'])} | {r['n_test']} | "
            f"{r['setting']}, {r['C']:g}, {r['layer']} | **{r['transfer']:.2f}** "
            f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] | {r['best_layer_accuracy']:.2f} "
            f"({r['best_layer']}) | {r['bow_accuracy']:.2f} | {r['in_set_accuracy']:.2f} | "
            f"{r['ece']:.2f} | {r['chance']:.2f} |"
        )
    print()
    by_attribute = {r["attribute"]: r for r in rows}
    print(
        "| attribute | classes | n | best layer | accuracy [95% CI] | selectivity | majority | "
        "bag of words | transfer | warning |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in inside["stages"].get("probes", {}).get("summary", []):
        t = by_attribute.get(r["attribute"])
        warn = t is not None and r["accuracy"] - t["transfer"] > 0.20
        gap = "in-distribution > transfer + 20 points" if warn else ""
        print(
            f"| {NAMES.get(r['attribute'], r['attribute'])} | {r['classes']} | {r['n']} | "
            f"{r['best_layer']} | {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
            f"{r['selectivity']:+.3f} | {r['majority']:.3f} | {r['bow_accuracy']:.3f} | "
            f"{'' if t is None else format(t['transfer'], '.2f')} | {gap} |"
        )
    for ro in transfer.get("readout", []):
        print(
            f"\nread-out vs tailoring, {ro['attribute']}: {ro['n_items']} items, layer "
            f"{ro['layer']}, r = {ro['r']:.2f} [{ro['ci_low']:.2f}, {ro['ci_high']:.2f}], "
            f"Spearman {ro['spearman']:.2f}"
        )
    seconds = results["seconds"]
    print("\nseconds:", ", ".join(f"{k} {v}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
