"""What `probes run` says as it goes: one line per step on stderr, prefixed so that it stands
apart from progress bars and from the summary on stdout."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(f"[probes run] {message}", file=sys.stderr, flush=True)
