"""Does the cue move the answer? For each behaviour attribute, the fraction of twin pairs whose
answer-set log-odds moves in the expected direction between the two cue conditions.

    python scripts/behavior_effects.py --model gemma-3-270m
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from probes.behavior.scoring import behavior_log_odds
from probes.datasets import load_behavior_items
from probes.datasets.behavior import behavior_attributes
from probes.models.loading import load_model

# Under which cue the positive answer set should be the more likely one.
CUE_RAISING_POSITIVE = {"dialect": "uk", "belief": "true", "proficiency": "native"}


def twin_effects(model, attribute: str) -> dict[str, float]:
    items = load_behavior_items(attribute)
    scores = behavior_log_odds(model, items).numpy()
    raising = CUE_RAISING_POSITIVE[attribute]
    by_pair: dict[str, dict[str, float]] = defaultdict(dict)
    for item, score in zip(items, scores, strict=True):
        by_pair[item.pair_id or item.id][item.cue] = float(score)
    diffs = np.asarray(
        [
            pair[raising] - next(v for k, v in pair.items() if k != raising)
            for pair in by_pair.values()
            if len(pair) == 2
        ]
    )
    return {
        "items": len(items),
        "pairs": len(diffs),
        "fraction_expected_direction": float((diffs > 0).mean()),
        "mean_shift": float(diffs.mean()),
        "median_shift": float(np.median(diffs)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    args = parser.parse_args()
    model = load_model(args.model)
    print("| attribute | items | twin pairs | expected direction | mean shift | median shift |")
    print("|---|---:|---:|---:|---:|---:|")
    for attribute in behavior_attributes():
        r = twin_effects(model, attribute)
        print(
            f"| {attribute} (cue '{CUE_RAISING_POSITIVE[attribute]}' raises it) | {r['items']} | "
            f"{r['pairs']} | {r['fraction_expected_direction']:.0%} | {r['mean_shift']:+.2f} | "
            f"{r['median_shift']:+.2f} |"
        )


if __name__ == "__main__":
    main()
