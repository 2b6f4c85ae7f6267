"""`probes cache`: extract activations for a dataset into a content-addressed store."""

from __future__ import annotations

import argparse

from probes.cli.args import add_model_args


def _handle(args: argparse.Namespace) -> int:
    """Extract (or resume) the store and print where it is."""
    from probes.cache.extraction import extract_dataset
    from probes.datasets import RenderSpec, load_dataset
    from probes.datasets.labels import align_labels, parse_label_map
    from probes.models.loading import load_model

    dataset = load_dataset(args.dataset, size=args.size, seed=args.seed)
    if args.label_map or args.labels:
        labels = args.labels.split(",") if args.labels else None
        dataset = align_labels(dataset, labels, parse_label_map(args.label_map))
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    suffix = None
    if args.position == "suffix":
        suffix = args.suffix.replace("{attribute}", dataset.attribute.replace("_", " "))
    store = extract_dataset(
        model,
        dataset,
        render_spec=RenderSpec(frame=args.frame),
        layers=args.layers,
        sites=args.sites,
        position=args.position,
        suffix=suffix,
        dtype=args.store_dtype,
        batch_size=args.batch_size,
        cache_root=args.out,
    )
    size_mb = store.nbytes_on_disk() / 2**20
    print(
        f"store: {store.path}\n"
        f"rows {len(store)}, layers {store.layers[0]}..{store.layers[-1]}, "
        f"sites {','.join(store.sites)}, {store.request['dtype']}, {size_mb:.1f} MB"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache", help="extract activations for a dataset into a resumable store"
    )
    add_model_args(parser)
    parser.add_argument(
        "--dataset", required=True, help="built-in dataset name or a JSONL/CSV file"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="cache root: the store is written to a subfolder named by its content hash, and "
        "`probes probe --store` takes the root too while it holds one store "
        "(default: $PROBES_HOME/activations)",
    )
    parser.add_argument("--layers", default="all", help="'all', '0,4,8' or '2-6'")
    parser.add_argument(
        "--sites",
        default="resid_post",
        help="comma list of resid_pre, resid_post, attn_out, mlp_out",
    )
    parser.add_argument("--position", default="last", choices=["last", "mean", "suffix"])
    parser.add_argument(
        "--suffix",
        default=" I think the {attribute} of this user is",
        help="read-out suffix for --position suffix",
    )
    parser.add_argument("--frame", default="raw", choices=["raw", "chat", "template"])
    parser.add_argument(
        "--store-dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="dtype the activations are stored in (default: %(default)s)",
    )
    parser.add_argument("--model-dtype", dest="dtype", help=argparse.SUPPRESS)  # old name
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=None, help="built-in dataset size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--label-map",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="rename a label before storing (repeatable); spellings such as 'older adult' and "
        "'Older-Adult' are normalised to older_adult first",
    )
    parser.add_argument(
        "--labels", default=None, help="comma list fixing the class order, e.g. child,adult"
    )
    parser.set_defaults(func=_handle)
