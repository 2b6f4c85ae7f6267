"""The suite's steering against the exported control vector running in llama.cpp.

Fits the attribute's mean-difference direction at each layer, exports each one (and the whole
band) as a llama.cpp control-vector GGUF, then scores the attribute's behaviour items twice:
in the suite (the de-quantized float model, ``steer``) and in llama.cpp (the embedded
Q4_K_M GGUF, ``llama_set_adapter_cvec`` with the file at scale 1). It prints, per edit, how
often the two answer log-odds shifts have the same sign, their per-item correlation, each
side's flip rate and mean shift, and how far the two engines are apart without the vector.
Needs the ``llama`` extra (llama-cpp-python).

    python scripts/llamacpp_steering.py --attribute dialect --strength 0.15
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from probes.atomic import atomic_write_json
from probes.datasets import load_behavior_items
from probes.models import embedded_gguf, load_model
from probes.models.layers import layers_at_depth
from probes.pipeline.interventions import directions_for
from probes.vectors.comparison import base_log_odds, compare_engines
from probes.vectors.files import ModelShape, write_control_vector
from probes.vectors.llamacpp import LlamaCppModel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attribute", default="dialect")
    parser.add_argument("--layers", default=None, help="e.g. 7,11,14 (default: 40/60/80%% depth)")
    parser.add_argument("--strength", type=float, default=0.15, help="x typical norm (and its -)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write every per-item number here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model = load_model("gemma-3-270m", device="cpu")
    layers = (
        [int(x) for x in args.layers.split(",")]
        if args.layers
        else layers_at_depth(model.n_layers, (0.4, 0.6, 0.8))
    )
    directions = directions_for(model, args.attribute, layers, "mean_diff")
    items = load_behavior_items(args.attribute)
    shape = ModelShape.of(model)
    edits = [([d], f"layer {d.layer}") for d in directions]
    edits.append((directions, "band " + "+".join(str(d.layer) for d in directions)))
    rows, results = [], []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LlamaCppModel(embedded_gguf(), threads=args.threads) as engine,
    ):
        bases = base_log_odds(model, engine, items)
        for band, name in edits:
            for strength in (args.strength, -args.strength):
                path = Path(tmp) / f"{len(rows)}.gguf"
                write_control_vector(path, band, strength, shape, "gguf")
                result = compare_engines(model, band, strength, items, engine, path, bases=bases)
                rows.append((name, strength, result.summary()))
                results.append({"edit": name, **result.to_dict()})
    base = rows[0][2]
    print(
        f"{args.attribute}: {base['n_items']} behaviour items, mean-difference directions, "
        f"suite = de-quantized float32 model + steer(), llama.cpp = Q4_K_M GGUF + the exported "
        f"control vector at scale 1.0 ({time.perf_counter() - start:.0f} s)\n"
    )
    print(
        "| edit | strength | same direction | shift r | flip rate suite | flip rate llama.cpp "
        "| mean shift suite | mean shift llama.cpp |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, strength, s in rows:
        print(
            f"| {name} | {strength:+g} | {s['same_direction']:.0%} | {s['shift_correlation']:.2f}"
            f" | {s['suite_flip_rate']:.0%} of {s['suite_flip_eligible']} "
            f"| {s['engine_flip_rate']:.0%} of {s['engine_flip_eligible']} "
            f"| {s['suite_mean_shift']:+.2f} | {s['engine_mean_shift']:+.2f} |"
        )
    print(
        f"\nwithout the vector: llama.cpp minus suite log-odds, mean |gap| "
        f"{base['base_gap_mean_abs']:.2f}, max |gap| {base['base_gap_max_abs']:.2f}; "
        f"per-item correlation {base['base_correlation']:.3f}; same sign on "
        f"{base['base_sign_agreement']:.0%} of items"
    )
    if args.out:
        atomic_write_json(args.out, {"model": model.describe(), "results": results})
    worst = min(s["same_direction"] for _, _, s in rows)
    return 0 if worst >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
