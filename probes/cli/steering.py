"""`probes steer`, `probes patch` and `probes generate`: interventions from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from probes.cli.args import add_model_args, load_model_from_args
from probes.datasets.cues import STEERABLE
from probes.models.layers import layers_at_depth
from probes.validate import float_arg, floats_arg, int_arg, out_dir_arg, text_arg


def _layers(text: str | None, n_layers: int) -> list[int]:
    """Parse a layer list; by default three layers at 40%, 60% and 80% of the depth."""
    from probes.cache.extraction import parse_layers

    if text is None:
        return layers_at_depth(n_layers, (0.4, 0.6, 0.8))
    return parse_layers(text, n_layers)


def _handle_steer(args: argparse.Namespace) -> int:
    """Run the sweep, write ``results.json`` and print the best settings."""
    from probes.pipeline.interventions import print_steering_summary, steer_to_folder

    strengths = args.strengths
    model = load_model_from_args(args)
    out = Path(args.out)
    payload = steer_to_folder(
        model,
        args.attribute,
        _layers(args.layers, model.n_layers),
        strengths,
        out,
        method=args.method,
        kl_max=args.kl_max,
    )
    print_steering_summary(payload["summary"])
    print(f"results: {out / 'results.json'}")
    return 0


def _handle_patch(args: argparse.Namespace) -> int:
    """Patch every layer x token group, write ``results.json`` and print the table."""
    from probes.pipeline.interventions import patch_to_folder

    model = load_model_from_args(args)
    layers = _layers(args.layers, model.n_layers) if args.layers else None
    out = Path(args.out)
    p = patch_to_folder(model, args.attribute, layers, out)["patching"]
    print(f"{p['n_pairs']} twin pairs, total effect {p['total_effect']:+.2f}")
    print("layer  " + "  ".join(f"{c[:12]:>12}" for c in p["columns"]))
    for layer, row in zip(p["layers"], p["restored"], strict=True):
        print(f"{layer:>5}  " + "  ".join(f"{v:>12.2f}" for v in row))
    print(f"results: {out / 'results.json'}")
    return 0


def _handle_generate(args: argparse.Namespace) -> int:
    from probes.behavior.scoring import greedy_continuations
    from probes.directions import Direction
    from probes.interventions.hooks import steer

    direction = Direction.load(args.steer) if args.steer else None  # before the model loads
    model = load_model_from_args(args)
    if direction is not None:
        with steer(model, direction, args.strength, scope=args.scope):
            texts = greedy_continuations(model, args.prompt, args.max_new_tokens)
    else:
        texts = greedy_continuations(model, args.prompt, args.max_new_tokens)
    for prompt, text in zip(args.prompt, texts, strict=True):
        print(f"{prompt}\u2192{text}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_model_args(common)

    s = subparsers.add_parser(
        "steer", parents=[common], help="steering sweep: strengths x layers, with controls"
    )
    s.add_argument("--attribute", default="dialect", choices=sorted(STEERABLE))
    s.add_argument(
        "--layers", default=None, help="e.g. 3,6,9 or 2-10 or all (default: 40/60/80%% depth)"
    )
    s.add_argument(
        "--strengths",
        type=floats_arg(nonzero=True),
        default=[-0.2, -0.1, 0.1, 0.2],
        help="comma-separated, x typical norm (default: -0.2,-0.1,0.1,0.2)",
    )
    s.add_argument("--method", default="mean_diff", choices=["mean_diff", "probe", "twin_pca"])
    s.add_argument(
        "--kl-max", type=float_arg(positive=True), default=0.5, help="damage bound in nats"
    )
    s.add_argument("--out", required=True, type=out_dir_arg)
    s.set_defaults(func=_handle_steer)

    p = subparsers.add_parser(
        "patch", parents=[common], help="activation patching heatmap over behaviour twins"
    )
    p.add_argument("--attribute", default="dialect", choices=sorted(STEERABLE))
    p.add_argument("--layers", default=None, help="default: every layer")
    p.add_argument("--out", required=True, type=out_dir_arg)
    p.set_defaults(func=_handle_patch)

    g = subparsers.add_parser("generate", parents=[common], help="greedy generation, steered")
    g.add_argument("prompt", nargs="+", type=text_arg)
    g.add_argument("--steer", default=None, help="a saved direction (.json/.safetensors)")
    g.add_argument("--strength", type=float_arg(), default=1.0, help="x the layer's typical norm")
    g.add_argument("--scope", default="all", choices=["prompt", "generation", "all"])
    g.add_argument("--max-new-tokens", type=int_arg(1), default=20)
    g.set_defaults(func=_handle_generate)
