"""Time ``fit_layerwise`` on a small synthetic store with this checkout and another one, side by
side: runs alternate between the two (each in a fresh process), so both see the same load.

    python scripts/bench_ab_layerwise.py --other /work/main --rows 2000 --layers 8 --dim 640

It prints the median time of each checkout, their ratio, and whether the per-layer results
(accuracy, control accuracy, interval) are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def write_store(folder: Path, rows: int, layers: int, dim: int) -> None:
    """A float32 store with a planted direction whose strength grows with depth."""
    import torch

    from probes.cache.store import write_store as write

    gen = torch.Generator().manual_seed(0)
    y = torch.arange(rows) % 2
    acts = torch.randn(rows, layers, dim, generator=gen)
    acts[:, :, 0] += 0.3 * torch.arange(layers)[None, :] * (2 * y[:, None] - 1)
    table = [{"label": "ab"[int(c)], "group": f"g{i % 20}"} for i, c in enumerate(y)]
    write(folder, {"resid_post": acts}, table, shard_size=512)


def child(folder: Path, boot: int) -> None:
    """Fit the store with the ``probes`` on this process's path; print one JSON line."""
    from probes.cache.store import ActivationStore
    from probes.probing.layerwise import fit_layerwise

    store = ActivationStore.open(folder)
    start = time.perf_counter()
    result = fit_layerwise(store, n_boot=boot, bow=False)
    seconds = time.perf_counter() - start
    keys = ("accuracy", "control_accuracy", "ci_low", "ci_high")
    rows = [[r[k] for k in keys] for r in result.rows]
    print(json.dumps({"seconds": seconds, "rows": rows}))


def run(checkout: Path, folder: Path, boot: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, __file__, "--child", str(folder), "--boot", str(boot)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--other", type=Path, help="the checkout to compare with")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.boot)
        return
    if args.other is None:
        parser.error("--other (the checkout to compare with) is required")

    folder = Path(tempfile.mkdtemp(prefix="probes-ab-")) / "store"
    try:
        write_store(folder, args.rows, args.layers, args.dim)
        checkouts = {"this": HERE, "other": args.other.resolve()}
        times: dict[str, list[float]] = {name: [] for name in checkouts}
        results: dict[str, dict] = {}
        for _ in range(args.repeats):
            for name, path in checkouts.items():  # alternate, so both see the same load
                results[name] = run(path, folder, args.boot)
                times[name].append(results[name]["seconds"])
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    shape = f"{args.rows} x {args.layers} x {args.dim}"
    print(f"\nstore: {shape}, {args.repeats} runs each, alternating")
    print("\n| checkout | median time | runs |")
    print("|---|---:|---|")
    for name, path in checkouts.items():
        runs = " ".join(f"{t:.1f}" for t in times[name])
        print(f"| {name} ({path}) | {statistics.median(times[name]):.1f} s | {runs} |")
    ratio = statistics.median(times["this"]) / statistics.median(times["other"])
    print(f"\nthis / other: {ratio:.2f}")
    print(f"per-layer results identical: {results['this']['rows'] == results['other']['rows']}")


if __name__ == "__main__":
    main()
