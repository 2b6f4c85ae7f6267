"""GPU benchmark, ready for a lent GPU: extraction throughput against the bare Hugging Face body
on a random-weight Llama-3-8B-shaped model in bfloat16 (target >= 0.90x), and probe fitting for
32 layers x 4,096 dims.

    python scripts/bench_gpu.py                         # the 8B shape: ~32 GB of GPU memory
    python scripts/bench_gpu.py --layers 4 --prompts 64  # a quick smoke run of the same code

The model is built from a config in code directly on the GPU (no download, no folder), seeded;
the bare body is a second copy of the same weights without the bridge's hooks. Both run the
same length-sorted batches of the same prompts; the script prints tokens/s and the ratio, then
the probe-fitting time on a synthetic store of the model's width and depth.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from probes.cache.extraction import extract
from probes.models.batching import collate, encode, length_sorted_batches, pad_token_id
from probes.models.loading import wrap_hf_model
from probes.models.tiny import build_byte_tokenizer

LLAMA3_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "vocab_size": 128256,
}


def build(layers: int, device: torch.device) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=layers, architectures=["LlamaForCausalLM"], **LLAMA3_8B)
    torch.manual_seed(0)
    with device:
        model = LlamaForCausalLM(config)
    return model.to(torch.bfloat16).eval()


def prompts(n: int, words: int) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    vocab = ["my", "kid", "flat", "lorry", "holiday", "pension", "homework", "ya", "innit", "the"]
    return [
        " ".join(
            vocab[int(i)] for i in torch.randint(0, len(vocab), (words + k % 17,), generator=gen)
        )
        for k in range(n)
    ]


def timed(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probe-rows", type=int, default=4000)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    device = torch.device("cuda")

    hf = build(args.layers, device)
    plain = copy.deepcopy(hf)  # the bare body: same weights, never wrapped by the bridge
    model = wrap_hf_model(hf, build_byte_tokenizer(), "random-llama3-8b", "random-llama3-8b-0")
    texts = prompts(args.prompts, args.words)
    ids = encode(model.tokenizer, texts)
    n_tokens = sum(len(x) for x in ids)
    batches = list(length_sorted_batches([len(x) for x in ids], args.batch_size))
    pad = pad_token_id(model.tokenizer)
    plain.set_attn_implementation("sdpa")

    @torch.inference_mode()
    def bare() -> None:
        for b in batches:
            batch = collate([ids[i] for i in b], pad, "right", device)
            plain.base_model(**batch.model_kwargs(), use_cache=False)

    def ours() -> None:
        with tempfile.TemporaryDirectory() as root:
            extract(
                model,
                texts,
                layers="all",
                batch_size=args.batch_size,
                cache_root=root,
                shard_size=len(texts),
                progress=False,
            )

    bare(), ours()  # warm-up (kernels, allocator)
    t_bare, t_ours = timed(bare, args.repeats), timed(ours, args.repeats)
    print(f"model: Llama-3-8B shape, {args.layers} layers, bf16, {torch.cuda.get_device_name()}")
    print(
        f"{len(texts)} prompts, {n_tokens} tokens, batch {args.batch_size}, best of {args.repeats}"
    )
    print("\n| method | tokens/s | vs bare body |")
    print("|---|---|---|")
    print(f"| bare HF body (SDPA, no hooks) | {n_tokens / t_bare:,.0f} | 1.00x |")
    print(
        f"| probes extract (all layers, bf16 store) | {n_tokens / t_ours:,.0f} | "
        f"{t_bare / t_ours:.2f}x |"
    )

    # Probe fitting at the model's width and depth (the fitter works on the CPU).
    from probes.probing.layerwise import encode_labels, make_splits
    from probes.probing.linear import fit_logistic_batched

    gen = torch.Generator().manual_seed(0)
    y = torch.arange(args.probe_rows) % 2
    X = torch.randn(args.layers, args.probe_rows, LLAMA3_8B["hidden_size"], generator=gen)
    X[:, :, 0] += y.float()[None, :] * torch.linspace(0.1, 2.0, args.layers)[:, None]
    _, labels = encode_labels([str(int(v)) for v in y])
    splits = make_splits(labels, [f"g{i % 40}" for i in range(args.probe_rows)], 5, 0)
    start = time.perf_counter()
    fit = fit_logistic_batched(X, torch.as_tensor(labels), torch.as_tensor(splits.train_masks), 2)
    seconds = time.perf_counter() - start
    print(
        f"\nprobe fit: {args.layers} layers x {LLAMA3_8B['hidden_size']} dims x "
        f"{args.probe_rows} rows x 5 folds: {seconds:.1f} s, "
        f"{int(fit.converged.sum())}/{fit.converged.numel()} converged"
    )


if __name__ == "__main__":
    main()
