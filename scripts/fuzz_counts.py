"""Run the fuzz table (tests/fuzz/cases.py) and print how each case ended, with the totals.

    python scripts/fuzz_counts.py [--only NAME_SUBSTRING] [--verbose]

It runs the probes package of the checkout it sits in (so a copy of tests/fuzz and this script
placed in an older checkout measures that one). A verdict is one of: clean (exit 2, one line on
stderr, no file changed), traceback, silent (exit 0: the bad input was accepted), noisy
(another exit code or more than one line), dirty (a file appeared or changed that the case does
not allow).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--skip", type=int, default=0, help="start at this case number")
    parser.add_argument("--exclude", action="append", default=[], help="leave out a case")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="probes-fuzz-") as tmp:
        root = Path(tmp)
        os.environ["PROBES_HOME"] = str(root / "home")
        from tests.fuzz.assets import Assets
        from tests.fuzz.cases import CASES
        from tests.fuzz.runner import run_case

        assets = Assets(root / "assets")
        verdicts: Counter[str] = Counter()
        by_kind: dict[str, Counter[str]] = {}
        for n, case in enumerate(CASES):
            if (args.only and args.only not in case.name) or n < args.skip:
                continue
            if case.name in args.exclude:
                continue
            start = time.perf_counter()
            outcome = run_case(case, root / "work" / f"{n:03d}", assets)
            verdicts[outcome.verdict] += 1
            by_kind.setdefault(case.kind, Counter())[outcome.verdict] += 1
            detail = outcome.error or outcome.stderr.strip().splitlines()[-1:] or [""]
            text = detail if isinstance(detail, str) else detail[0]
            extra = f" changed {outcome.changed[:2]}" if outcome.changed else ""
            print(
                f"{outcome.verdict:<9} {case.kind:<6} {case.name:<36} "
                f"{time.perf_counter() - start:5.1f}s  {text[:110]}{extra}",
                flush=True,
            )
            if args.verbose and outcome.verdict != "clean":
                print(outcome.stderr)
    print(
        "\nkind    "
        + "  ".join(f"{v:>9}" for v in ("clean", "traceback", "silent", "noisy", "dirty"))
    )
    for kind, counts in by_kind.items():
        cells = "  ".join(
            f"{counts[v]:>9}" for v in ("clean", "traceback", "silent", "noisy", "dirty")
        )
        print(f"{kind:<7} {cells}")
    total = sum(verdicts.values())
    print(f"\n{total} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
