"""Do probes trained on the built-in template sets read the attribute in other text?

For each attribute: train a probe on the built-in set and test it on the hand-written chatty
corpus (never generated from the templates), beside a bag-of-words model transferred the same
way. The probe's layer is the best layer of the built-in set's own cross-validation, chosen
without looking at the test corpus. Writes a table, results.json and figures.

    python scripts/transfer_corpus.py --model gemma-3-270m --out runs/transfer
"""

from __future__ import annotations

import argparse
from pathlib import Path

from probes.atomic import atomic_write_json
from probes.cache.extraction import extract_dataset
from probes.datasets import load_dataset, transfer_corpus
from probes.models.loading import load_model
from probes.pipeline.config import PROBE_ATTRIBUTES
from probes.probing.layerwise import fit_layerwise
from probes.probing.transfer import transfer, transfer_matrix
from probes.viz.export import save_figure
from probes.viz.probing import plot_transfer, plot_transfer_bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--out", default="runs/transfer")
    parser.add_argument("--attributes", nargs="+", default=list(PROBE_ATTRIBUTES))
    parser.add_argument("--heatmap", default="dialect_us_uk", help="attribute for the matrix")
    args = parser.parse_args()
    out = Path(args.out)
    model = load_model(args.model)
    rows, results = [], {}
    for name in args.attributes:
        train_store = extract_dataset(model, load_dataset(name), progress=False)
        test_store = extract_dataset(model, transfer_corpus(name), progress=False)
        layer = fit_layerwise(train_store, control=False, bow=False, n_boot=10).best_layer
        result = transfer(
            train_store, test_store, train_name=f"{name} (built-in)", test_name=f"{name} (chatty)"
        )
        at = result.at_layer(layer)
        rows.append(
            {
                "attribute": name,
                "classes": len(result.labels),
                "n_test": result.n_test,
                "layer": layer,
                "probe_accuracy": at["accuracy"],
                "ci_low": at["ci_low"],
                "ci_high": at["ci_high"],
                "bow_accuracy": result.bow["accuracy"],
                "chance": 1 / len(result.labels),
            }
        )
        results[name] = result.to_dict()
        if name == args.heatmap:
            matrix = transfer_matrix({"built-in": train_store, "chatty": test_store}, layer=layer)
            results["matrix"] = matrix
            save_figure(plot_transfer(matrix), out / f"transfer_matrix_{name}")
    save_figure(plot_transfer_bars(rows), out / "transfer_builtin_to_chatty")
    atomic_write_json(out / "results.json", {"rows": rows, "results": results})
    print(
        "| attribute | classes | chatty messages | layer | probe accuracy [95% CI] | "
        "bag of words | chance |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['attribute']} | {r['classes']} | {r['n_test']} | {r['layer']} | "
            f"{r['probe_accuracy']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] | "
            f"{r['bow_accuracy']:.2f} | {r['chance']:.2f} |"
        )


if __name__ == "__main__":
    main()
