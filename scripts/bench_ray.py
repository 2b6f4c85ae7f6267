"""Benchmark data-parallel extraction on Ray: 1 and 2 workers against the single-process path,
on the same prompts, into fresh stores; checks the stores are byte for byte equal.

    python scripts/bench_ray.py --model gemma-3-270m --prompts 256 --workers 1,2

The local cluster's start-up (ray.init) is timed apart. The Ray extraction time includes
starting the actors and one model load per worker, which a long study pays once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from probes.cache.extraction import extract
from probes.models.loading import load_model


def prompts(n: int) -> list[str]:
    openers = ["Honestly,", "Quick question:", "So my kid said", "After thirty years at the plant"]
    topics = ["how do I fix a leaking tap?", "what should we cook tonight?", "is the lorry late?"]
    return [f"{openers[i % 4]} {topics[i % 3]} (note {i}, {'more ' * (i % 7)})" for i in range(n)]


def shard_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.glob("shard-*.safetensors"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    import ray

    model = load_model(args.model, device="cpu")
    texts = prompts(args.prompts)
    common = {"shard_size": args.shard_size, "batch_size": args.batch_size, "progress": False}
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        single = extract(model, texts, cache_root=f"{root}/single", **common)
        rows = [("single process", time.perf_counter() - start, 0.0, True)]
        reference = shard_bytes(single.path)
        for n in (int(w) for w in args.workers.split(",")):
            start = time.perf_counter()
            ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
            startup = time.perf_counter() - start
            start = time.perf_counter()
            store = extract(model, texts, cache_root=f"{root}/ray{n}", workers=n, **common)
            seconds = time.perf_counter() - start
            rows.append(
                (f"Ray, {n} worker(s)", seconds, startup, shard_bytes(store.path) == reference)
            )
            ray.shutdown()
    base = rows[0][1]
    size = f"shards of {args.shard_size}, batch {args.batch_size}"
    print(f"{args.model}, {args.prompts} prompts, {size}")
    print("\n| path | extraction | vs single process | ray.init | store identical |")
    print("|---|---:|---:|---:|---|")
    for name, seconds, startup, same in rows:
        up = f"{startup:.1f} s" if startup else "-"
        print(f"| {name} | {seconds:.1f} s | {base / seconds:.2f}x | {up} | {same} |")


if __name__ == "__main__":
    main()
