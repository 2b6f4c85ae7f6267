"""`probes probe` and `probes transfer`: layer-wise probes on stores, with figures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from probes.atomic import atomic_write_json
from probes.cli.args import STORE_HELP, open_store, resolve_store
from probes.errors import ProbesError
from probes.validate import float_arg, int_arg, out_dir_arg

if TYPE_CHECKING:
    from probes.cache.store import ActivationStore
    from probes.probing.layerwise import LayerwiseResult


def _print_table(result: LayerwiseResult) -> None:
    print(
        f"{result.attribute}: {len(result.labels)} classes, n={result.n_examples}, "
        f"{result.n_folds} folds by {result.splits}"
    )
    print("layer  accuracy  95% CI          control  selectivity")
    for row in result.rows:
        mark = "  <- best" if row["layer"] == result.best_layer else ""
        interval = f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        print(
            f"{row['layer']:>5}  {row['accuracy']:.3f}     {interval}"
            f"  {row['control_accuracy']:.3f}    {row['selectivity']:+.3f}{mark}"
        )
    bow = f"{result.bow['accuracy']:.3f}" if result.bow else "n/a"
    print(f"majority class {result.majority_accuracy:.3f}; bag of words {bow}")


def _setting_of(store: ActivationStore) -> str:
    """``position/frame`` of a store, from its request."""
    from probes.probing.selection import setting_key

    position = store.request.get("position", {}).get("kind", "last")
    rendering = store.request.get("rendering")
    frame = rendering.get("frame", "raw") if isinstance(rendering, dict) else rendering or "raw"
    return setting_key(str(position), str(frame))


def _handle_selection(args: argparse.Namespace, store: ActivationStore, out: Path) -> int:
    """``--select-on``: C and layer chosen on stores of other styles; ``--test`` scored once."""
    from probes.datasets.labels import parse_label_map
    from probes.probing.selection import Style, score_on_test, select_settings

    label_map = parse_label_map(args.label_map)
    setting = _setting_of(store)
    styles = [Style("train", {setting: store})]
    for k, path in enumerate(args.select_on):
        styles.append(Style(f"validation{k + 1}", {setting: open_store(path)}))
    validation = [s.name for s in styles[1:]]
    selection = select_settings(
        styles, validation=validation, Cs=args.Cs, site=args.site, label_map=label_map
    )
    print(f"chosen: {selection.reason}")
    payload: dict = {"selection": selection.to_dict()}
    if args.test:
        report = score_on_test(
            selection,
            styles,
            open_store(args.test),
            site=args.site,
            label_map=label_map,
            n_boot=args.n_boot,
            seed=args.seed,
        )
        payload["test"] = report.to_dict()
        print(
            f"test ({report.n_test} rows, {report.n_test_groups} families): accuracy "
            f"{report.accuracy:.3f} [{report.ci_low:.3f}, {report.ci_high:.3f}] at the chosen "
            f"layer {report.layer}; best layer on the test (optimistic) {report.best_layer} "
            f"{report.best_layer_accuracy:.3f}; bag of words {report.bow_accuracy:.3f}; "
            f"in-set CV {report.in_set_accuracy:.3f}; ECE {report.ece:.3f}"
        )
    atomic_write_json(out / "results.json", payload)
    print(f"results: {out / 'results.json'}")
    return 0


def _handle_probe(args: argparse.Namespace) -> int:
    """Fit the layer-wise probes, write ``results.json`` and the figure, print the table."""
    from probes.probing.layerwise import fit_layerwise
    from probes.viz.export import save_figure
    from probes.viz.probing import plot_layerwise

    store = open_store(args.store)
    if args.select_on:
        return _handle_selection(args, store, Path(args.out))
    if args.test:
        raise ProbesError("--test needs --select-on: settings are chosen on other text first")
    result = fit_layerwise(
        store,
        site=args.site,
        n_folds=5 if args.folds is None else args.folds,
        exact_folds=args.folds is not None,
        C=args.C,
        n_boot=args.n_boot,
        seed=args.seed,
        backend=args.backend,
        bow=not args.no_bow,
    )
    out = Path(args.out)
    atomic_write_json(out / "results.json", result.to_dict())
    files = save_figure(plot_layerwise(result), out / f"probe_{result.attribute}")
    _print_table(result)
    print(f"results: {out / 'results.json'}; figures: {', '.join(str(f) for f in files)}")
    return 0


def _handle_transfer(args: argparse.Namespace) -> int:
    """Train on one store, test on the others; write ``results.json`` (and the matrix)."""
    from probes.cache.store import ActivationStore
    from probes.probing.transfer import transfer, transfer_matrix
    from probes.viz.export import save_figure
    from probes.viz.probing import plot_transfer

    train_path = resolve_store(args.train)
    test_paths = [resolve_store(p) for p in args.test]
    train = ActivationStore.open(train_path)
    tests = [ActivationStore.open(path) for path in test_paths]
    if args.layer is not None and any(args.layer not in s.layers for s in [train, *tests]):
        shared = sorted(set(train.layers).intersection(*(s.layers for s in tests)))
        raise ProbesError(f"--layer {args.layer} is not in every store (shared layers {shared})")
    out = Path(args.out)
    results = []
    for test in tests:
        result = transfer(train, test, site=args.site, C=args.C)
        results.append(result.to_dict())
        best = max(result.rows, key=lambda r: r["accuracy"])
        print(
            f"train {result.train} -> test {result.test}: best layer {best['layer']} "
            f"accuracy {best['accuracy']:.3f} [{best['ci_low']:.3f}, {best['ci_high']:.3f}]; "
            f"bag of words {result.bow['accuracy']:.3f}"
        )
    payload: dict = {"transfers": results}
    if args.layer is not None:
        stores = {p.name: ActivationStore.open(p) for p in [train_path, *test_paths]}
        matrix = transfer_matrix(stores, layer=args.layer, site=args.site, C=args.C)
        payload["matrix"] = matrix
        save_figure(plot_transfer(matrix), out / "transfer")
    atomic_write_json(out / "results.json", payload)
    print(f"results: {out / 'results.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    probe = subparsers.add_parser("probe", help="layer-wise probes with controls on a store")
    probe.add_argument("--store", required=True, help=STORE_HELP)
    probe.add_argument(
        "--out", required=True, type=out_dir_arg, help="folder for results.json and figures"
    )
    probe.add_argument("--site", default="resid_post")
    probe.add_argument(
        "--folds",
        type=int_arg(2),
        default=None,
        help="cross-validation folds (default: 5, fewer when the store has fewer families; "
        "a number given here is refused if the store cannot make that many)",
    )
    probe.add_argument(
        "--C", type=float_arg(positive=True), default=1.0, help="inverse L2 strength (as sklearn)"
    )
    probe.add_argument("--n-boot", type=int_arg(1), default=1000)
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--backend", default="torch", choices=["torch", "sklearn"])
    probe.add_argument("--no-bow", action="store_true", help="skip the bag-of-words baseline")
    probe.add_argument(
        "--select-on",
        nargs="+",
        default=[],
        metavar="STORE",
        help="stores of other styles: choose C and layer by leave-one-style-out on them "
        "(trained on --store and the others, validated on each) instead of in-set CV",
    )
    probe.add_argument(
        "--test", default=None, help="with --select-on: a held-out store, scored once"
    )
    probe.add_argument(
        "--Cs", type=float, nargs="+", default=[0.1, 1.0, 10.0], help="C values to choose from"
    )
    probe.add_argument(
        "--label-map",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="align labels across stores (repeatable; spellings are normalised first)",
    )
    probe.set_defaults(func=_handle_probe)

    tr = subparsers.add_parser("transfer", help="train a probe on one store, test on others")
    tr.add_argument("--train", required=True, help="store to train on (" + STORE_HELP + ")")
    tr.add_argument("--test", required=True, nargs="+", help="stores to test on (each as --train)")
    tr.add_argument("--out", required=True, type=out_dir_arg)
    tr.add_argument("--site", default="resid_post")
    tr.add_argument("--C", type=float_arg(positive=True), default=1.0)
    tr.add_argument("--layer", type=int, default=None, help="also write a matrix at this layer")
    tr.set_defaults(func=_handle_transfer)
