"""Benchmark layer-wise probe fitting: one batched torch problem vs a scikit-learn loop.

Both fit the same L2 logistic regression on standardised activations, for every layer and every
cross-validation fold (grouped by template family), on the same store; the script prints wall
time and out-of-fold accuracy per layer side by side. ``--threads N`` gives both sides the same
N threads (torch's intra-op pool, and the BLAS under numpy and scikit-learn); without it each
library keeps its own default.

    python scripts/bench_probes.py --model gemma-3-270m --dataset dialect_us_uk --size 2000
    python scripts/bench_probes.py --dataset age --size 2000 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from probes.cache.extraction import extract_dataset
from probes.datasets import load_dataset
from probes.models.loading import load_model
from probes.probing.layerwise import encode_labels, make_splits
from probes.probing.linear import fit_logistic_batched, predict_proba_batched, sklearn_reference_fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--dataset", default="dialect_us_uk")
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None, help="threads for both sides")
    args = parser.parse_args()
    limit: contextlib.AbstractContextManager = contextlib.nullcontext()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        limit = threadpool_limits(limits=args.threads)

    model = load_model(args.model)
    dataset = load_dataset(args.dataset, size=args.size)
    store = extract_dataset(model, dataset)  # cached after the first run
    classes, y = encode_labels(store.labels)
    splits = make_splits(y, store.column("group"), args.folds)
    X = store.stack("resid_post").transpose(0, 1).float().contiguous()  # [layers, n, d]
    test = ~splits.train_masks

    start = time.perf_counter()
    fit = fit_logistic_batched(
        X, torch.as_tensor(y), torch.as_tensor(splits.train_masks), len(classes), C=args.C
    )
    proba = predict_proba_batched(fit, X).numpy()  # [L, F, n, k]
    torch_seconds = time.perf_counter() - start
    torch_pred = proba.argmax(-1)

    with limit:
        start = time.perf_counter()
        sk_pred = sklearn_reference_fit(X.numpy(), y, splits.train_masks, len(classes), C=args.C)
        sk_seconds = time.perf_counter() - start

    def oof_accuracy(pred: np.ndarray) -> np.ndarray:  # [L, F, n] -> [L]
        return ((pred == y[None, None, :]) & test[None]).sum((1, 2)) / test.sum()

    torch_acc, sk_acc = oof_accuracy(torch_pred), oof_accuracy(sk_pred)
    agree = ((torch_pred == sk_pred) & test[None]).sum((1, 2)) / test.sum()
    n_problems = X.shape[0] * splits.n_folds
    print(
        f"\n{model.name}, {args.dataset}: n={len(y)}, d={X.shape[-1]}, {X.shape[0]} layers x "
        f"{splits.n_folds} folds ({splits.kind}) = {n_problems} fits, {len(classes)} classes, "
        f"threads: {args.threads or 'library defaults'}\n"
    )
    print("| layer | accuracy (torch) | accuracy (sklearn) | difference | same prediction |")
    print("|---:|---:|---:|---:|---:|")
    for layer, a, b, s in zip(store.layers, torch_acc, sk_acc, agree, strict=True):
        print(f"| {layer} | {a:.3f} | {b:.3f} | {a - b:+.3f} | {s:.1%} |")
    print(
        f"\nwall time: torch batched {torch_seconds:.1f} s, scikit-learn loop {sk_seconds:.1f} s, "
        f"speed-up {sk_seconds / torch_seconds:.1f}x; "
        f"largest accuracy difference {np.abs(torch_acc - sk_acc).max():.3f}; "
        f"torch iterations {int(fit.n_iter.min())}-{int(fit.n_iter.max())} "
        f"(mean {float(fit.n_iter.float().mean()):.0f}), all converged: {bool(fit.converged.all())}"
    )


if __name__ == "__main__":
    main()
