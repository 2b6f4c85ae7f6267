"""Does the cue move the answer? For each behaviour attribute, the fraction of twin pairs whose
answer-set log-odds moves in the expected direction between the two cue conditions.

    python scripts/behavior_effects.py --model gemma-3-270m
"""

from __future__ import annotations

import argparse

from probes.behavior.twins import twin_effect
from probes.datasets import load_behavior_items
from probes.datasets.behavior import behavior_attributes
from probes.datasets.cues import CUES
from probes.models.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    args = parser.parse_args()
    model = load_model(args.model)
    print("| attribute | items | twin pairs | expected direction | mean shift | median shift |")
    print("|---|---:|---:|---:|---:|---:|")
    for attribute in behavior_attributes():
        r = {**twin_effect(model, attribute), "items": len(load_behavior_items(attribute))}
        print(
            f"| {attribute} (cue '{CUES[attribute].raising}' raises it) | {r['items']} | "
            f"{r['pairs']} | {r['fraction_following_cue']:.0%} | {r['mean_shift']:+.2f} | "
            f"{r['median_shift']:+.2f} |"
        )


if __name__ == "__main__":
    main()
