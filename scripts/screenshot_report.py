"""Screenshot a run folder's report.html with headless Chromium (a full-page PNG, for review).

    python scripts/screenshot_report.py --report runs/default/report.html --out report.png

The page is taken at ``--width`` x ``--height`` pixels; pick a height taller than the report.
Chromium gets ``--virtual-time-budget`` so plotly has drawn every figure before the shot.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def find_browser() -> str | None:
    """The Chromium that probes uses for PNGs, else ``chromium`` on PATH."""
    try:
        from probes.viz.export import browser_for_png

        found = browser_for_png()
    except ImportError:
        found = None
    return found or shutil.which("chromium")


def screenshot_command(browser: str, report: Path, out: Path, width: int, height: int) -> list[str]:
    return [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--hide-scrollbars",
        f"--screenshot={out}",
        f"--window-size={width},{height}",
        "--virtual-time-budget=10000",
        report.resolve().as_uri(),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", required=True, type=Path, help="path to report.html")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for Chromium")
    args = parser.parse_args(argv)

    if not args.report.is_file():
        print(f"error: no report at {args.report}", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print("error: no Chromium found (install chromium or set BROWSER_PATH)", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    command = screenshot_command(browser, args.report, out, args.width, args.height)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"error: Chromium took more than {args.timeout:g} s", file=sys.stderr)
        return 2
    if not out.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        message = f"error: Chromium wrote no screenshot (exit {done.returncode}): {last}"
        print(message, file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
