"""`probes audit`: the persona audit of one model, with its own results.json and report.html."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from probes.cli.args import add_model_args, load_model_from_args
from probes.errors import ProbesError
from probes.validate import int_arg, out_dir_arg

_positive = int_arg(1)


def _attributes(value: str) -> tuple[str, ...]:
    return tuple(a for a in value.split(",") if a) if value != "none" else ()


def run_from_args(args: argparse.Namespace) -> int:
    """Load the model, run the audit, write results.json and report.html into ``--out``."""
    import torch

    from probes import __version__
    from probes.atomic import atomic_write_json, make_dirs
    from probes.audit import load_policy, run_audit
    from probes.datasets import list_datasets
    from probes.report.audit import write_audit_report
    from probes.viz.audit import write_audit_figures

    load_policy(args.policy)  # a bad policy fails before the model loads
    known = {info.name for info in list_datasets()}
    bad = [a for a in args.readout if a not in known]
    if bad:
        raise ProbesError(f"--readout: unknown dataset {bad[0]!r}")
    out = Path(args.out)
    make_dirs(out)
    start = time.perf_counter()
    model = load_model_from_args(args)
    load_seconds = round(time.perf_counter() - start, 1)
    result = run_audit(
        model,
        max_items=args.max_items,
        policy=args.policy,
        n_boot=args.n_boot,
        n_perm=args.n_perm,
        mitigation=not args.no_mitigation,
        readout_attributes=args.readout,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.quiet,
    )
    result.figures = write_audit_figures(result, out / "figures")
    result.seconds["load_model"] = load_seconds
    results = {
        "probes_version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "model": model.describe(),
        "audit": result.to_dict(),
    }
    atomic_write_json(out / "results.json", results)
    header = {
        "model": results["model"],
        "probes version": __version__,
        "items": f"{result.n_utility_items} questions, {result.n_safety_items} requests",
        "policy": result.policy["source"],
        "seconds": result.seconds,
    }
    report = write_audit_report(out, result, header)
    pb, perm, mit = result.pb, result.bias.permutation_p, result.mitigation
    print(
        f"PB {pb['estimate']:.3f} [{pb['low']:.3f}, {pb['high']:.3f}] over "
        f"{result.bias.n_identities} identities (item noise alone: "
        f"{result.bias.pb_null['mean']:.3f}); "
        f"persona matters: safety p {perm['safety_log_odds']:.3g}, "
        f"utility p {perm['utility_margin']:.3g}"
    )
    flagged = result.flagged
    print(f"tier 1: {len(flagged)} flagged{': ' + ', '.join(flagged) if flagged else ''}")
    if mit:
        print(
            f"mitigation: PB {pb['estimate']:.3f} -> {mit.pb_after.pb['estimate']:.3f}, "
            f"utility {mit.utility_change['estimate']:+.3f}, KL {mit.neutral_kl:.3f} nats"
        )
    print(f"results in {out / 'results.json'} ({result.seconds['total']} s)\nreport: {report}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser(
        "audit",
        help="persona audit: safety and utility per stated identity, PB, three-tier report",
        description='Ask every item with "I am {persona}." for 31 identities and none; report '
        "personalization bias, tier-1/2/3 verdicts, the probes' read-out and a mitigation.",
    )
    add_model_args(audit)
    audit.add_argument(
        "--out", required=True, type=out_dir_arg, help="folder for results.json, report and figures"
    )
    audit.add_argument("--policy", default=None, help="TOML policy file (default: packaged)")
    audit.add_argument(
        "--max-items",
        type=_positive,
        default=None,
        help="cap each item set at N category-balanced items (default: all 159 + 80)",
    )
    audit.add_argument(
        "--readout",
        type=_attributes,
        default=("age", "gender", "socioeconomic", "education"),
        help="attributes whose probes read the persona prompts, comma-separated, or 'none' "
        "(default: age,gender,socioeconomic,education)",
    )
    audit.add_argument("--no-mitigation", action="store_true", help="skip the ablation re-run")
    audit.add_argument("--n-boot", type=_positive, default=1000)
    audit.add_argument("--n-perm", type=_positive, default=1000)
    audit.add_argument("--batch-size", type=_positive, default=32)
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--quiet", action="store_true", help="no progress bars")
    audit.set_defaults(func=run_from_args)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m probes.cli.audit``): exactly ``probes audit ARGS``."""
    from probes.cli.app import main as probes_main

    return probes_main(["audit", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
