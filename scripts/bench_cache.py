"""Benchmark activation extraction against the bare model and TransformerLens run_with_cache.

All methods run in one process on the same prompts, in the same length-sorted batches:
  (a) bare Hugging Face decoder body, no hooks (a plain copy of the model: the practical limit)
  (b) probes.cache.extract (all layers, resid_post, last position, into a fresh store)
  (c) TransformerBridge.run_with_cache(names_filter=...) and then selecting the same positions
It prints tokens/s, the ratio to (a), and the peak resident memory each adds over the loaded
model. ``--memory-prompts`` also runs (b) alone on a larger set to check its memory.

    python scripts/bench_cache.py --model gemma-3-270m --prompts 96 --memory-prompts 2000
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import torch

from probes.cache.extraction import extract
from probes.models.batching import collate, encode, length_sorted_batches, pad_token_id
from probes.models.loading import load_model

_OPENERS = [
    "Honestly I'm not sure where to start, but",
    "Quick question for you:",
    "My flatmate and I were arguing about this last night, and",
    "So my kid came home from school today and",
    "After thirty years at the plant I finally retired, and",
    "I need some help with something at work:",
]
_TOPICS = [
    "how do I get a stain out of a wool jumper without shrinking it?",
    "what is a good way to save money for a holiday next summer?",
    "can you explain how interest on a mortgage actually works?",
    "which vegetables grow well in a small garden with little sun?",
    "what should I pack for a long train journey with two children?",
    "is it worth learning to code at my age, and where would I begin?",
    "how can I write a polite complaint letter to my landlord?",
    "what are some easy dinners I can cook in twenty minutes?",
]


def make_prompts(n: int) -> list[str]:
    """Varied prompts of mixed length (1 to 3 sentences), deterministic."""
    out = []
    for i in range(n):
        parts = [_OPENERS[i % len(_OPENERS)], _TOPICS[(i // len(_OPENERS)) % len(_TOPICS)]]
        parts += [_TOPICS[(i * 7 + k) % len(_TOPICS)] for k in range(i % 3)]
        out.append(" ".join(parts) + f" (note {i})")
    return out


class PeakRSS:
    """Samples this process's resident memory in a thread; reports the peak over a baseline."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def added_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    with PeakRSS() as mem:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    return seconds, mem.added_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--prompts", type=int, default=96, help="prompts for the 3-way comparison")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each method")
    parser.add_argument("--memory-prompts", type=int, default=0, help="(b) alone on this many")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--memory-only", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:
        memory_only(args)
        return

    torch.manual_seed(0)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    prompts = make_prompts(args.prompts)
    ids = encode(model.tokenizer, prompts)
    n_tokens = sum(len(x) for x in ids)
    batches = list(length_sorted_batches([len(x) for x in ids], args.batch_size))
    pad = pad_token_id(model.tokenizer)
    layers = list(range(model.n_layers))

    from transformers import AutoModelForCausalLM

    if model.location.startswith("built in code"):
        from probes.models.tiny import build_tiny_model

        plain = build_tiny_model(model.spec)[0]
    else:
        plain = AutoModelForCausalLM.from_pretrained(model.location, dtype=model.dtype)
    plain = plain.to(model.device).eval()

    def bare_with(attention: str) -> Callable[[], None]:
        @torch.inference_mode()
        def bare() -> None:
            plain.set_attn_implementation(attention)
            for b in batches:
                batch = collate([ids[i] for i in b], pad, "right", model.device)
                plain.base_model(**batch.model_kwargs(), use_cache=False)

        return bare

    def ours() -> None:
        with tempfile.TemporaryDirectory() as root:
            extract(
                model,
                prompts,
                layers=layers,
                sites=["resid_post"],
                position="last",
                batch_size=args.batch_size,
                cache_root=root,
                shard_size=max(len(prompts), 1),
                progress=False,
            )

    names = {f"blocks.{layer}.hook_out" for layer in layers}

    @torch.inference_mode()
    def tl_cache() -> None:
        picked = []
        for b in batches:
            batch = collate([ids[i] for i in b], pad, "right", model.device)
            _, cache = model.bridge.run_with_cache(
                batch.input_ids,
                attention_mask=batch.attention_mask,
                names_filter=lambda n: n in names,
            )
            last = batch.lengths - 1
            rows = torch.arange(len(b))
            picked.append(torch.stack([cache[n][rows, last] for n in sorted(names)], 1).cpu())
            del cache

    methods = [
        ("(a) bare HF body, no hooks (sdpa)", bare_with("sdpa")),
        ("(a') bare HF body, no hooks (eager)", bare_with("eager")),
        ("(b) probes.cache.extraction.extract", ours),
        ("(c) bridge.run_with_cache", tl_cache),
    ]
    for name, fn in methods:
        if name.startswith("(a)"):
            fn()  # warm-up the allocator and kernels once
    # Round-robin repeats, so background noise hits every method alike; keep the best of each.
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in methods}
    for _ in range(args.repeats):
        for name, fn in methods:
            runs[name].append(timed(fn))
    results = {name: (min(r[0] for r in rs), max(r[1] for r in rs)) for name, rs in runs.items()}

    base = n_tokens / results[methods[0][0]][0]
    print(f"\nmodel {model.name} on {model.device}, {len(prompts)} prompts, {n_tokens} tokens,")
    print(f"batch size {args.batch_size}, all {len(layers)} layers, best of {args.repeats}\n")
    print("| method | tokens/s | vs (a) | vs (c) | peak RSS added (MB) |")
    print("|---|---:|---:|---:|---:|")
    tl_speed = n_tokens / results[methods[3][0]][0]
    for name, (seconds, added) in results.items():
        speed = n_tokens / seconds
        ratios = f"{speed / base:.2f}x | {speed / tl_speed:.2f}x"
        print(f"| {name} | {speed:,.0f} | {ratios} | {added:,.0f} |")

    if args.memory_prompts:
        # A fresh process, so memory the allocator kept from the runs above cannot hide growth.
        import subprocess
        import sys

        cmd = [sys.executable, __file__, "--memory-only", str(args.memory_prompts)]
        cmd += ["--model", args.model, "--batch-size", str(args.batch_size)]
        subprocess.run(cmd, check=True)


def memory_only(args: argparse.Namespace) -> None:
    """(b) alone on many prompts; RSS baseline taken after the model is loaded."""
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    prompts = make_prompts(args.memory_only)
    n_tokens = sum(len(x) for x in encode(model.tokenizer, prompts))
    loaded_mb = psutil.Process().memory_info().rss / 2**20

    def run() -> None:
        with tempfile.TemporaryDirectory() as root:
            extract(model, prompts, batch_size=args.batch_size, cache_root=root, progress=False)

    seconds, added = timed(run)
    print(
        f"\n(b) alone in a fresh process on {len(prompts)} prompts ({n_tokens} tokens, all "
        f"{model.n_layers} layers, resid_post, float32): {n_tokens / seconds:,.0f} tokens/s; "
        f"resident memory {loaded_mb:,.0f} MB with the model loaded, peak added by extraction "
        f"{added:,.0f} MB"
    )


if __name__ == "__main__":
    main()
