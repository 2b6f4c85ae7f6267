"""The `probes` command line. Errors a user can cause print one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from probes import __version__
from probes.cli.args import add_model_args, load_model_from_args
from probes.errors import ProbesError, os_error_message
from probes.validate import out_dir_arg

Handler = Callable[[argparse.Namespace], int]


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _cmd_models(args: argparse.Namespace) -> int:
    from probes.models.loading import list_models

    rows = list_models()
    width = max(len(r["spec"]) for r in rows)
    for row in rows:
        print(f"{row['spec']:<{width}}  {row['description']}\n{'':<{width}}  ({row['state']})")
    print("\nAny local Hugging Face folder, or an id already in the local HF cache, also works.")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import time

    start = time.perf_counter()
    model = load_model_from_args(args, args.spec)
    info = model.describe()
    info["load_seconds"] = round(time.perf_counter() - start, 1)
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from probes.doctor import run_doctor

    failed = 0
    for check in run_doctor(tuple(args.model) if args.model else None):
        print(f"{check.status:<4}  {check.name:<34}  {check.detail}", flush=True)
        failed += not check.ok
    if failed:
        print(f"\n{failed} check(s) failed: read the FAIL lines above.", file=sys.stderr)
        return 1
    print("\nall checks passed")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from probes.pipeline.run import RunOptions, run_main_job

    options = RunOptions(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        config=args.config,
        quick=args.quick,
        out=args.out,
        fresh=args.fresh,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    return run_main_job(options)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="probes",
        description="Probe, steer and audit what a language model infers about its user.",
    )
    parser.add_argument("--version", action="version", version=f"probes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    sub.required = True

    models = sub.add_parser("models", help="list the built-in model specs and their state")
    models.set_defaults(func=_cmd_models)

    info = sub.add_parser("info", help="load a model and print its layers, sizes and fingerprint")
    info.add_argument("spec", help="gemma-3-270m, tiny-gemma3, tiny-gpt2, or a local folder")
    add_model_args(info, model=False)
    info.set_defaults(func=_cmd_info)

    doctor = sub.add_parser(
        "doctor", help="print versions, device and model state, and run a self-check"
    )
    doctor.add_argument(
        "--model",
        action="append",
        default=None,
        help="run the self-check on this model spec (repeatable; default: the tiny models, "
        "and the embedded one when converted)",
    )
    doctor.set_defaults(func=_cmd_doctor)

    run = sub.add_parser("run", help="the main job: run the suite on a model, write a run folder")
    add_model_args(run)
    run.add_argument("--config", default=None, help="TOML config file")
    run.add_argument("--quick", action="store_true", help="small sizes, for a first look")
    run.add_argument(
        "--out", default=None, type=out_dir_arg, help="run folder (default: runs/<timestamp>)"
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="recompute every stage instead of reusing the results of an earlier run with the "
        "same inputs (activation stores are still reused)",
    )
    run.set_defaults(func=_cmd_run)

    for register in _plugin_registrars():
        register(sub)
    return parser


def _plugin_registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands owned by other modules (each exposes ``register(subparsers)``)."""
    registrars: list[Callable[[argparse._SubParsersAction], None]] = []
    try:
        from probes.cli.datasets import register as register_datasets

        registrars.append(register_datasets)
    except ImportError:
        pass
    from probes.cli.audit import register as register_audit
    from probes.cli.cache import register as register_cache
    from probes.cli.mediation import register as register_mediation
    from probes.cli.probing import register as register_probing
    from probes.cli.readers import register as register_readers
    from probes.cli.steering import register as register_steering
    from probes.cli.vector import register as register_vector

    registrars += [
        register_cache,
        register_probing,
        register_steering,
        register_mediation,
        register_audit,
        register_readers,
        register_vector,
    ]
    return registrars


def guarded(run: Callable[[], int | None], prog: str = "probes") -> int:
    """Call ``run``; a ProbesError or an OSError prints one line and returns 2, Ctrl-C 130.

    The one place the command line turns errors a user can cause into an exit code (``main``,
    and the case-study scripts through ``probes.cli.mediation.case_study_main``)."""
    try:
        return int(run() or 0)
    except ProbesError as exc:
        print(f"{prog}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the one mapping of OS faults: path and cause, one line
        print(f"{prog}: error: {_one_line(os_error_message(exc))}", file=sys.stderr)
        return 2
    except RecursionError:
        print(f"{prog}: error: input nested too deeply to read", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _one_line(message: str) -> str:
    """An error message as one line, whatever a library put in it."""
    return " ".join(message.split()) or "failed"


def main(argv: Sequence[str] | None = None) -> int:
    """``probes ARGS``: parse, run the subcommand, and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return guarded(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
