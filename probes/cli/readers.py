"""`probes readers train`: fit a reader bundle (reading and control probes, steering directions)
for the dashboard; `probes dashboard`: the live dashboard on a local web server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from probes.cli.args import add_model_args
from probes.errors import ProbesError
from probes.validate import int_arg

DEFAULT_PORT = 8765
DEFAULT_BAND = (0.5,)  # fractions of the depth
DEFAULT_STRENGTH = 0.03  # residual-norm units


def _print_bundle(bundle: Any) -> None:
    print("attribute       classes  reading layer (held-out acc)  control layer (held-out acc)")
    for row in bundle.summary():
        print(
            f"{row['attribute']:<15} {len(row['classes']):>7}  {row['reading_layer']:>13} "
            f"({row['reading_accuracy']:.3f}){'':>8}  {row['control_layer']:>13} "
            f"({row['control_accuracy']:.3f})"
        )


def _handle_train(args: argparse.Namespace) -> int:
    from probes.models.loading import load_model
    from probes.readers import train_readers

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"fitting readers for {model.name} ({model.fingerprint})", file=sys.stderr)

    def step(i: int, n: int, name: str) -> None:
        print(f"[{i + 1}/{n}] {name}", file=sys.stderr, flush=True)

    from probes.pipeline.readers import READER_SIZE

    size = args.size or READER_SIZE
    bundle = train_readers(
        model, tuple(args.attributes), size=size, on_attribute=step, progress=True
    )
    tensors, meta = bundle.save(Path(args.out))
    _print_bundle(bundle)
    print(f"bundle: {meta} and {tensors.name}")
    return 0


def steer_settings(model: Any, band: str | None, strength: float) -> Any:
    """The dashboard's default steering band: a layer list, or the layer at half the depth
    (where one pin flips the embedded model's favourite-team reply, README)."""
    from probes.dashboard.session import SteerSettings
    from probes.models.layers import layers_at_depth, parse_layers

    layers = (
        parse_layers(band, model.n_layers)
        if band
        else layers_at_depth(model.n_layers, DEFAULT_BAND)
    )
    return SteerSettings(tuple(sorted(set(layers))), float(strength))


def _check_port_free(host: str, port: int) -> None:
    """A one-line error now, rather than after the model and readers are loaded."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ProbesError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pass --port"
            ) from exc


def _handle_dashboard(args: argparse.Namespace) -> int:
    from probes.dashboard.engine import ChatEngine
    from probes.dashboard.server import create_app
    from probes.dashboard.session import Session
    from probes.models.loading import load_model
    from probes.pipeline.readers import READER_SIZE, cached_readers
    from probes.readers import ReaderBundle

    if not 0 < args.port < 65536:
        raise ProbesError(f"port {args.port} is not a TCP port (1-65535)")
    _check_port_free(args.host, args.port)
    bundle = ReaderBundle.load(args.readers) if args.readers else None
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if bundle is None:
        print("fitting readers on first start (cached for later starts)", file=sys.stderr)
        bundle, folder, reused = cached_readers(model, size=args.size or READER_SIZE)
        print(f"readers {'reused from' if reused else 'stored in'} {folder}", file=sys.stderr)
    engine = ChatEngine(model, bundle, max_new_tokens=args.max_new_tokens)  # checks the model
    session = Session(engine, steer_settings(model, args.band, args.strength))
    app = create_app(session)
    import uvicorn

    print(f"probes dashboard: http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from probes.readers import READER_ATTRIBUTES

    readers = sub.add_parser("readers", help="reader bundles for the dashboard")
    rsub = readers.add_subparsers(dest="readers_command", metavar="ACTION")
    rsub.required = True
    train = rsub.add_parser(
        "train",
        help="fit reading/control probes and steering directions per attribute, save a bundle",
    )
    add_model_args(train)
    train.add_argument(
        "--attributes",
        nargs="+",
        default=list(READER_ATTRIBUTES),
        metavar="DATASET",
        help="built-in attribute datasets (default: all seven)",
    )
    train.add_argument(
        "--size", type=int_arg(1), default=None, help="examples per dataset (default 128)"
    )
    train.add_argument("--out", required=True, help="bundle folder (readers.json + .safetensors)")
    train.set_defaults(func=_handle_train)

    dash = sub.add_parser("dashboard", help="the live dashboard: chat, readings, steering")
    add_model_args(dash)
    dash.add_argument("--readers", default=None, help="a bundle folder (default: fit and cache)")
    dash.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    dash.add_argument("--host", default="127.0.0.1", help="default %(default)s (this machine)")
    dash.add_argument(
        "--size", type=int_arg(1), default=None, help="examples per dataset when fitting"
    )
    dash.add_argument("--band", default=None, help="default steering layers, e.g. '6-9'")
    dash.add_argument(
        "--strength",
        type=float,
        default=DEFAULT_STRENGTH,
        help="default pin strength (residual-norm units)",
    )
    dash.add_argument("--max-new-tokens", type=int, default=40, help="reply length limit")
    dash.set_defaults(func=_handle_dashboard)
