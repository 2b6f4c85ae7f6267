"""`probes run`: the config-driven main job. Each stage writes into one run folder."""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from pathlib import Path
from typing import Any

import torch

from probes import __version__
from probes.atomic import atomic_write_json

# A first look at implicit personalization: the same request with UK vs US cues, and whether the
# model's favourite-team continuation follows the cue (the IP paper's case 1, Jin et al. 2024).
DIALECT_PAIRS: tuple[tuple[str, str], ...] = (
    (
        "I love the colour of autumn leaves. My favourite football team is",
        "I love the color of fall leaves. My favorite football team is",
    ),
    (
        "I took the lift up to my flat and put the football on. My favourite team is",
        "I took the elevator up to my apartment and put the football on. My favorite team is",
    ),
    (
        "My mum drove me to the petrol station in her car. My favourite team is",
        "My mom drove me to the gas station in her car. My favorite team is",
    ),
)
UK_TEAMS = (" Leeds United", " Arsenal", " Manchester United", " Liverpool", " Chelsea")
US_TEAMS = (" the New England Patriots", " the Packers", " the Dallas Cowboys", " the Yankees")


def default_run_dir() -> Path:
    return Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def dialect_first_look(model: Any) -> dict[str, Any]:
    """Answer-set log-odds (UK clubs vs US teams) after UK- and US-cued twins of one prompt."""
    from probes.behavior import continuation_logprobs, greedy_continuations

    rows = []
    for uk_prompt, us_prompt in DIALECT_PAIRS:
        row: dict[str, Any] = {}
        for cue, prompt in (("uk", uk_prompt), ("us", us_prompt)):
            prompts = [prompt] * (len(UK_TEAMS) + len(US_TEAMS))
            lps = continuation_logprobs(model, prompts, UK_TEAMS + US_TEAMS)
            log_odds = torch.logsumexp(lps[: len(UK_TEAMS)], 0) - torch.logsumexp(
                lps[len(UK_TEAMS) :], 0
            )
            row[cue] = {
                "prompt": prompt,
                "uk_vs_us_log_odds": float(log_odds),
                "greedy": greedy_continuations(model, [prompt], max_new_tokens=8)[0],
            }
        rows.append(row)
    follows = sum(r["uk"]["uk_vs_us_log_odds"] > 0 > r["us"]["uk_vs_us_log_odds"] for r in rows)
    return {"pairs": rows, "pairs_where_answer_follows_cue": follows, "n_pairs": len(rows)}


def run_main_job(args: argparse.Namespace) -> int:
    from probes.models import load_model

    start = time.perf_counter()
    out = Path(args.out) if args.out else default_run_dir()
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    loaded = time.perf_counter()
    look = dialect_first_look(model)
    results = {
        "probes_version": __version__,
        "python": platform.python_version(),
        "model": model.describe(),
        "config": {"quick": bool(args.quick), "config_file": args.config},
        "stages": {"dialect_first_look": look},
        "seconds": {
            "load_model": round(loaded - start, 1),
            "total": round(time.perf_counter() - start, 1),
        },
    }
    atomic_write_json(out / "results.json", results)
    print(f"\nmodel {model.name}: {model.n_layers} layers, d_model {model.d_model}")
    print("UK-cue vs US-cue twins: log-odds of a UK club vs a US team next, and the greedy answer")
    for row in look["pairs"]:
        for cue in ("uk", "us"):
            r = row[cue]
            print(f"  [{cue}] {r['uk_vs_us_log_odds']:+6.2f}  {r['prompt']}{r['greedy']!r}")
    follows, n_pairs = look["pairs_where_answer_follows_cue"], look["n_pairs"]
    print(f"the answer follows the cue (UK positive, US negative) in {follows}/{n_pairs} pairs")
    print(f"results in {out / 'results.json'} ({results['seconds']['total']} s)")
    return 0
