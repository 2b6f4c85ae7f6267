"""Benchmark probing a store larger than memory: peak resident memory and time, out-of-core
(layer by layer from the shards) against in-memory (every layer stacked), and the per-layer
accuracies of both on a store small enough for the in-memory path.

    python scripts/bench_out_of_core.py --rows 200000 --layers 8 --dim 1024 --folder /tmp/big
    python scripts/bench_out_of_core.py --rows 20000 --layers 8 --dim 1024 --compare

Each measurement runs in a fresh process (``--child``) so that its peak RSS is its own. The
synthetic store is written shard by shard (never whole in memory) and deleted afterwards unless
``--keep``. Labels are binary with a planted direction whose strength grows with depth.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch


def write_synthetic(folder: Path, rows: int, layers: int, dim: int, shard: int) -> None:
    """A float32 store of ``rows x layers x dim`` written one shard at a time."""
    from probes.cache.store import StoreWriter, iter_shards, tensor_name

    labels = [i % 2 for i in range(rows)]
    table = [{"row": i, "label": "ab"[c], "group": f"g{i % 50}"} for i, c in enumerate(labels)]
    request = {
        "model": {"name": "synthetic", "fingerprint": "synthetic"},
        "dataset_hash": f"synthetic-{rows}-{layers}-{dim}",
        "rendering": "external",
        "sites": ["resid_post"],
        "layers": list(range(layers)),
        "position": {"kind": "external"},
        "dtype": "float32",
        "n_rows": rows,
        "d_model": dim,
        "shard_size": shard,
    }
    writer = StoreWriter(folder, request, table)
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(dim, generator=gen)
    direction /= direction.norm()
    for index, start, end in iter_shards(rows, shard):
        y = torch.tensor(labels[start:end], dtype=torch.float32) * 2 - 1
        tensors = {}
        for layer in range(layers):
            x = torch.randn(end - start, dim, generator=gen)
            x += (0.05 * (layer + 1)) * y[:, None] * direction[None, :] * dim**0.5 / 8
            tensors[tensor_name("resid_post", layer)] = x
        writer.write_shard(index, (start, end), tensors)
    writer.finish()


def child(folder: Path, mode: str, folds: int) -> None:
    """Probe the store in this process and print one JSON line (time, peak RSS, accuracies)."""
    import numpy as np

    from probes.cache.store import ActivationStore
    from probes.probing.layerwise import (
        _fit_predict,
        encode_labels,
        fit_layerwise,
        make_splits,
        out_of_fold,
    )

    store = ActivationStore.open(folder)
    start = time.perf_counter()
    if mode == "out-of-core":
        result = fit_layerwise(store, n_folds=folds, n_boot=100, bow=False, control=False)
        accuracy = [r["accuracy"] for r in result.rows]
    else:  # the former path: every layer stacked in memory, one batched fit
        _, y = encode_labels(store.labels)
        splits = make_splits(y, store.column("group"), folds, 0)
        X = torch.stack([store.get(layer) for layer in store.layers]).float()
        proba = out_of_fold(
            _fit_predict(X, y, splits.train_masks, 2, 1.0, "torch"), splits.train_masks
        )
        accuracy = [float(a) for a in (proba.argmax(-1) == y[None, :]).mean(-1)]
        del X
        np.asarray(accuracy)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"mode": mode, "seconds": seconds, "peak_gib": peak_kib / 2**20, "accuracy": accuracy}
        )
    )


def run_child(folder: Path, mode: str, folds: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--folder", str(folder), "--folds", str(folds)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--shard", type=int, default=4096)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/probes-bench-out-of-core"))
    parser.add_argument("--compare", action="store_true", help="also run the in-memory path")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.folder, args.child, args.folds)
        return

    if args.folder.exists():
        shutil.rmtree(args.folder)
    start = time.perf_counter()
    write_synthetic(args.folder, args.rows, args.layers, args.dim, args.shard)
    size = sum(p.stat().st_size for p in args.folder.iterdir()) / 2**30
    print(
        f"store: {args.rows} x {args.layers} x {args.dim} float32, {size:.2f} GiB on disk, "
        f"written in {time.perf_counter() - start:.0f} s"
    )
    try:
        results = [run_child(args.folder, "out-of-core", args.folds)]
        if args.compare:
            results.append(run_child(args.folder, "in-memory", args.folds))
    finally:
        if not args.keep:
            shutil.rmtree(args.folder, ignore_errors=True)
    print("\n| path | time | peak RSS | per-layer accuracy |")
    print("|---|---|---|---|")
    for r in results:
        accs = " ".join(f"{a:.4f}" for a in r["accuracy"])
        print(f"| {r['mode']} | {r['seconds']:.0f} s | {r['peak_gib']:.2f} GiB | {accs} |")
    if len(results) == 2:
        same = results[0]["accuracy"] == results[1]["accuracy"]
        print(f"\nper-layer accuracies identical: {same}")


if __name__ == "__main__":
    main()
