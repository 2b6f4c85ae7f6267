"""`probes cache`: extract activations for a dataset into a content-addressed store."""

from __future__ import annotations

import argparse

from probes.cache.budget import TRUNCATE_SIDES
from probes.cli.args import (
    add_dispatch_args,
    add_model_args,
    batch_size_arg,
    dispatch_options,
    load_model_from_args,
)
from probes.validate import int_arg, out_dir_arg


def _handle(args: argparse.Namespace) -> int:
    """Extract (or resume) the store and print where it is."""
    from probes.cache.extraction import extract_dataset
    from probes.datasets import RenderSpec, load_dataset
    from probes.datasets.labels import align_labels, parse_label_map

    dataset = load_dataset(args.dataset, size=args.size, seed=args.seed)
    if args.label_map or args.labels:
        labels = args.labels.split(",") if args.labels else None
        dataset = align_labels(dataset, labels, parse_label_map(args.label_map))
    model = load_model_from_args(args, **dispatch_options(args))
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
        max_tokens=args.max_tokens,
        truncate=args.truncate,
        workers=args.workers,
        ray_address=args.ray_address,
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
    add_dispatch_args(parser)
    parser.add_argument(
        "--dataset", required=True, help="built-in dataset name or a JSONL/CSV file"
    )
    parser.add_argument(
        "--out",
        default=None,
        type=out_dir_arg,
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
        default=None,
        choices=["float32", "float16", "bfloat16"],
        help="dtype the activations are stored in (default: the model's when it is half "
        "precision, else float32)",
    )
    parser.add_argument("--model-dtype", dest="dtype", help=argparse.SUPPRESS)  # old name
    parser.add_argument(
        "--batch-size", type=batch_size_arg, default=16, help="rows per batch, or auto"
    )
    parser.add_argument(
        "--workers",
        type=int_arg(1),
        default=1,
        help="Ray workers, one model replica each (default 1)",
    )
    parser.add_argument(
        "--ray-address", default=None, help="an existing Ray cluster (default: start one here)"
    )
    parser.add_argument(
        "--max-tokens",
        type=int_arg(2),
        default=None,
        help="cut rows longer than N tokens (recorded in the store's request); without it, a "
        "row longer than the model's context is refused",
    )
    parser.add_argument(
        "--truncate",
        default="right",
        choices=TRUNCATE_SIDES,
        help="with --max-tokens: cut the end (right, default) or the start (left) of a long "
        "row; BOS is kept. --position suffix needs left",
    )
    parser.add_argument("--size", type=int_arg(1), default=None, help="built-in dataset size")
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
