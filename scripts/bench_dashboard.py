"""How fast the dashboard reads the model after a user turn, side by side with a naive reading.

(a) the dashboard: the new turn's tokens over the cached conversation, stopping at the deepest
    reader layer, then every attribute's read-out suffix in one batch over that cache;
(b) naive: for every attribute, the whole conversation plus its suffix from scratch, through
    every layer (no KV cache, no early exit).

    python scripts/bench_dashboard.py --readers DIR [--model gemma-3-270m] [--tokens 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

EARLIER = (
    ("user", "Hiya! I've just got back from the shops, it was absolutely chucking it down."),
    ("assistant", "Oh no, I hope you had a brolly with you."),
)
FILLER = (
    "I spent the whole afternoon sorting out the garden, then I put the kettle on and watched "
    "the football with my neighbour, who had popped round with a few biscuits. "
)


def turn_of(tokenizer, n_tokens: int) -> str:
    """A user message of about ``n_tokens`` tokens (the filler repeated, then cut)."""
    text = FILLER * (n_tokens // 20 + 2)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids).strip()


def main() -> None:
    from probes.dashboard.engine import Branch, ChatEngine
    from probes.models.loading import load_model
    from probes.pipeline.readers import cached_readers
    from probes.readers import ReaderBundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--readers", default=None, help="bundle folder (default: the cached fit)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens in the new user turn")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    bundle = ReaderBundle.load(args.readers) if args.readers else cached_readers(model)[0]
    engine = ChatEngine(model, bundle)
    message = turn_of(model.tokenizer, args.tokens)
    n_message = len(engine.encode(message, False))

    branch = Branch()  # the earlier turns, in the cache as the dashboard keeps them
    piece, _ = engine.new_piece(branch, EARLIER[:1])
    branch = engine.reply(branch, piece, max_new_tokens=12).branch
    turns = [
        EARLIER[0],
        ("assistant", branch.text.split("Assistant:")[-1].strip()),
        ("user", message),
    ]
    piece, extends = engine.new_piece(branch, turns)
    assert extends
    full_text = branch.text + piece

    def dashboard() -> None:
        engine.read(branch, piece)

    @torch.inference_mode()
    def naive() -> None:
        body = model.hf_model.base_model
        for reader in bundle.readers.values():
            ids = torch.tensor([engine.encode(full_text + reader.suffix, True)])
            body(input_ids=ids, use_cache=False)

    times: dict[str, list[float]] = {"dashboard": [], "naive": []}
    dashboard()  # warm up both
    naive()
    for _ in range(args.repeats):  # round-robin, so load changes hit both alike
        for name, fn in (("dashboard", dashboard), ("naive", naive)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(
        f"{model.name}: {len(bundle.readers)} attributes, deepest reader layer "
        f"{bundle.layers_needed} of {model.n_layers}; new turn {n_message} tokens after "
        f"{len(branch.ids)} cached; torch threads {torch.get_num_threads()}"
    )
    print("| method | median s | best s | vs (b) | bound 1 s |")
    print("|---|---:|---:|---:|---:|")
    for key, label in (
        ("dashboard", "(a) dashboard reading"),
        ("naive", "(b) naive, per attribute"),
    ):
        ratio = med["naive"] / med[key]
        bound = f"{med[key] / 1.0:.2f}x of it" if key == "dashboard" else ""
        print(f"| {label} | {med[key]:.3f} | {best[key]:.3f} | {ratio:.2f}x | {bound} |")


if __name__ == "__main__":
    main()
