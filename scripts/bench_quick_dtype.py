"""`probes run --quick` in float32 and in bfloat16, side by side: time and findings.

On a CPU that multiplies bfloat16 natively (AVX512-BF16 or AMX) ``--quick`` runs the model in
bfloat16 (``probes.models.devices.quick_dtype``). This script runs the same quick job twice,
each on an empty home that holds only the converted model (so every store is extracted and
every stage computed), once with ``--dtype float32`` and once with ``--dtype bfloat16``, and
prints the stage seconds, their ratio, and the findings of both runs next to each other.

    python scripts/bench_quick_dtype.py --out runs/bench-quick-dtype
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DTYPES = ("float32", "bfloat16")


def run_quick(dtype: str, out: Path) -> tuple[dict[str, Any], float]:
    """One `probes run --quick --dtype DTYPE` on a fresh home; its results and wall seconds."""
    from probes.models.loading import probes_home

    home = out / f"home-{dtype}"
    home.mkdir(parents=True)
    (home / "models").symlink_to(probes_home() / "models")
    env = {**os.environ, "PROBES_HOME": str(home)}
    run_dir = out / f"run-{dtype}"
    cmd = [sys.executable, "-m", "probes.cli", "run", "--quick", "--dtype", dtype]
    start = time.perf_counter()
    subprocess.run([*cmd, "--out", str(run_dir)], env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return json.loads((run_dir / "results.json").read_text()), wall


def findings(results: dict[str, Any]) -> dict[str, str]:
    """The headline numbers of a quick run, as short strings."""
    stages = results["stages"]
    rows: dict[str, str] = {}
    for row in stages["probes"]["summary"]:
        rows[f"probe {row['attribute']}: best layer, accuracy"] = (
            f"{row['best_layer']}, {row['accuracy']:.3f}"
        )
    for row in stages["transfer"]["summary"]:
        rows[f"transfer {row['attribute']} (held-out corpus)"] = (
            f"{row['transfer']:.3f} at layer {row['layer']}"
        )
    summary = stages["interventions"]["steering"]["summary"]
    for side in ("towards_target", "towards_source"):
        cell = summary[side]
        rows[f"steering {side}: flips, shift, KL"] = (
            f"{cell['flip_rate']:.0%}, {cell['mean_shift']:+.2f}, {cell['kl_mean']:.3f}"
        )
    erasure = stages["interventions"]["erasure"]
    rows["erasure: fresh probe at the erased layer"] = f"{erasure['rows'][0]['accuracy_after']:.3f}"
    for case in ("dialect", "proficiency", "echo_chamber"):
        te = stages["mediation"][case]["results"]["residual"][0]["te"]["mean"]
        rows[f"mediation {case}: total effect"] = f"{te:+.2f}"
    audit = stages["audit"]
    pb = audit["pb"]
    rows["audit PB [95% CI]"] = f"{pb['estimate']:.3f} [{pb['low']:.3f}, {pb['high']:.3f}]"
    rows["audit tier-1 flags"] = ", ".join(audit["tier1"]["flagged"]) or "none"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quick-dtype"))
    args = parser.parse_args()
    from probes.models.loading import is_converted

    if args.out.exists():
        print(
            f"{args.out} exists: pick a new folder (each run needs an empty home)", file=sys.stderr
        )
        sys.exit(2)
    if not is_converted():
        print(
            "the embedded model is not converted yet: `probes run --quick` once converts it",
            file=sys.stderr,
        )
        sys.exit(2)
    results, wall = {}, {}
    for dtype in DTYPES:
        results[dtype], wall[dtype] = run_quick(dtype, args.out)
        print(f"{dtype}: {wall[dtype]:.0f} s", file=sys.stderr)
    base, fast = (results[d]["seconds"] for d in DTYPES)
    print("| stage | float32 (s) | bfloat16 (s) | ratio |\n|---|---:|---:|---:|")
    for stage in base:
        ratio = base[stage] / fast[stage] if fast.get(stage) else float("nan")
        print(f"| {stage} | {base[stage]:.1f} | {fast.get(stage, 0):.1f} | {ratio:.2f}x |")
    print(
        f"| wall clock | {wall['float32']:.0f} | {wall['bfloat16']:.0f} | "
        f"**{wall['float32'] / wall['bfloat16']:.2f}x** |"
    )
    print("\n| finding | float32 | bfloat16 |\n|---|---|---|")
    a, b = (findings(results[d]) for d in DTYPES)
    for key in a:
        print(f"| {key} | {a[key]} | {b.get(key, 'n/a')} |")


if __name__ == "__main__":
    main()
