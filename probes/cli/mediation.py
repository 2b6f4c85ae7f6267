"""`probes mediate`: causal mediation of a behaviour case study, and the case-study scripts' CLI."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from probes.cli.args import add_model_args, load_model_from_args
from probes.errors import ProbesError
from probes.validate import int_arg, out_dir_arg

if TYPE_CHECKING:
    from probes.mediation import CaseStudyResult


def _directions(spec: Sequence[str]) -> tuple[str, list] | tuple[None, list]:
    """``--direction``: one fitting method name, or saved Direction files (``.json`` or stem)."""
    from probes.directions import METHODS, Direction

    if len(spec) == 1 and spec[0] in METHODS:
        return spec[0], []
    loaded = []
    for path in spec:
        if path in METHODS:
            raise ProbesError(f"--direction takes one method ({', '.join(METHODS)}) or files")
        stem = (
            Path(path).with_suffix("") if Path(path).suffix in (".json", ".safetensors") else path
        )
        if not Path(f"{stem}.json").exists():
            raise ProbesError(
                f"--direction {path!r} is neither a method ({', '.join(METHODS)}) "
                "nor a saved direction"
            )
        loaded.append(Direction.load(stem))
    return None, loaded


def _positions(value: str) -> tuple[int, ...] | Literal["all"]:
    if value in ("last", "all"):
        return (-1,) if value == "last" else "all"
    try:
        return tuple(int(p) for p in value.split(","))
    except ValueError as exc:
        raise ProbesError(
            f"--positions must be 'last', 'all' or e.g. '-2,-1', got {value!r}"
        ) from exc


def print_case_study(result: CaseStudyResult) -> None:
    """The markdown table per mediator and, for fitted directions, the best layer's accuracy."""
    from probes.mediation import markdown_table

    case, accuracy = result.case, result.direction_accuracy
    for name, rows in result.results.items():
        method = result.direction_method
        what = "whole residual" if name == "residual" else f"{method or 'given'} direction(s)"
        print(f"\n### {case.name}: mediator = {what} at the last token ({case.question})\n")
        print(markdown_table(rows, accuracy if name == "subspace" else None))
    best = result.best_layer
    if accuracy is not None and best is not None:
        print(
            f"\nheld-out accuracy of the {case.base_cue}/{case.counter_cue} mean-difference "
            f"classifier on {case.store_dataset}: best layer {best} ({accuracy[best]:.3f}); "
            "chance 0.5"
        )


def write_case_study(result: CaseStudyResult, out: str | Path) -> tuple[Path, list[Path]]:
    """Write ``results.json`` and ``mediation_{case}.html/.png`` into ``out``."""
    from probes.atomic import atomic_write_json
    from probes.viz.mediation import save_case_study_figure

    out = Path(out)
    json_path = out / "results.json"
    atomic_write_json(json_path, result.to_dict())
    return json_path, save_case_study_figure(result, out)


def run_from_args(args: argparse.Namespace, case_name: str | None = None) -> int:
    """Run one case study from parsed arguments (shared by ``probes mediate`` and the scripts)."""
    from probes.cache.extraction import parse_layers
    from probes.mediation import METRICS, analyse_case_study, case_study

    case = case_study(case_name or args.dataset)
    if getattr(args, "metric", None):
        if args.metric not in METRICS:
            raise ProbesError(f"--metric must be one of {', '.join(METRICS)}")
        case = replace(case, metric=args.metric)
    method, loaded = _directions(args.direction)
    mediators = ("subspace", "residual") if args.mediator == "both" else (args.mediator,)
    positions = _positions(args.positions)
    if args.pairs is not None and args.pairs < 1:
        raise ProbesError(f"--pairs must be at least 1, got {args.pairs}")
    model = load_model_from_args(args)
    layers = None if args.layers is None else parse_layers(args.layers, model.n_layers)
    result = analyse_case_study(
        model,
        case,
        layers=layers,
        pairs=args.pairs,
        method=method or "mean_diff",
        directions=loaded or None,
        mediators=mediators,
        positions=positions,
        n_boot=args.n_boot,
        n_perm=args.n_perm,
        seed=args.seed,
    )
    print_case_study(result)
    json_path, files = write_case_study(result, args.out)
    print(f"\nresults: {json_path}; figures: {', '.join(str(f) for f in files)}")
    n_pairs, chosen = len(result.pairs), result.config["layers"]
    print(f"{case.name}: {result.seconds:.0f} s for {n_pairs} twin pairs, layers {chosen}")
    return 0


def add_arguments(
    parser: argparse.ArgumentParser, *, pairs: int | None, dataset: bool, out: str | None = None
) -> None:
    """The options of ``probes mediate`` (``dataset=False`` for a fixed case-study script)."""
    from probes.mediation import CASE_STUDIES

    add_model_args(parser)
    if dataset:
        parser.add_argument(
            "--dataset",
            required=True,
            help=f"case study: {', '.join(CASE_STUDIES)} (or its behaviour set, e.g. belief)",
        )
    parser.add_argument(
        "--out",
        required=out is None,
        default=out,
        type=out_dir_arg,
        help="folder for results.json and figures" + (" (default: %(default)s)" if out else ""),
    )
    parser.add_argument(
        "--direction",
        nargs="+",
        default=["mean_diff"],
        help="method fitted per layer on the attribute's store (mean_diff, probe, twin_pca), "
        "or saved Direction files (default: mean_diff)",
    )
    parser.add_argument(
        "--layers",
        default=None,
        help="'all', '0,4,8' or '2-6' (default: every 3rd, the last and the best layer)",
    )
    parser.add_argument(
        "--mediator",
        default="both",
        choices=["subspace", "residual", "both"],
        help="(default: both)",
    )
    parser.add_argument("--positions", default="last", help="last (default), all, or e.g. -2,-1")
    parser.add_argument(
        "--pairs",
        type=int_arg(1),
        default=pairs,
        help=f"twin pairs drawn at random by --seed (default: {pairs or 'all'})",
    )
    parser.add_argument("--metric", default=None, help="log_odds or positive_logprob")
    parser.add_argument("--n-boot", type=int_arg(1), default=2000)
    parser.add_argument("--n-perm", type=int_arg(1), default=10_000)
    parser.add_argument("--seed", type=int, default=0)


def _handle_mediate(args: argparse.Namespace) -> int:
    return run_from_args(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    med = subparsers.add_parser(
        "mediate",
        help="causal mediation (TE, NIE, NDE per layer) of a behaviour case study",
        description="Does a cue's effect on the answer run through an attribute subspace of the "
        "residual stream, or through the whole residual, at the last prompt token?",
    )
    add_arguments(med, pairs=None, dataset=True)
    med.set_defaults(func=_handle_mediate)


def case_study_main(case_name: str, description: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/case_*.py``: parse, run, print one-line errors (exit 2)."""
    from probes.cli.app import guarded

    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser, pairs=12, dataset=False, out=f"runs/mediation/{case_name}")
    args = parser.parse_args(argv)
    return guarded(lambda: run_from_args(args, case_name), prog=parser.prog)
