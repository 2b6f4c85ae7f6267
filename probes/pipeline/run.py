"""`probes run`: the config-driven main job. Each stage writes into one run folder."""

from __future__ import annotations

import datetime as dt
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from probes import __version__
from probes.atomic import atomic_write_json, make_dirs
from probes.models.loading import LoadedModel
from probes.pipeline.messages import say
from probes.pipeline.probing_stage import probe_layers, shared_positions, stage_probes
from probes.pipeline.stage_cache import StageRunner

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


def dialect_first_look(model: LoadedModel) -> dict[str, Any]:
    """Answer-set log-odds (UK clubs vs US teams) after UK- and US-cued twins of one prompt."""
    from probes.behavior.scoring import continuation_logprobs, greedy_continuations

    prompts = [prompt for pair in DIALECT_PAIRS for prompt in pair]
    answers = UK_TEAMS + US_TEAMS
    lps = continuation_logprobs(
        model, [p for p in prompts for _ in answers], [a for _ in prompts for a in answers]
    ).reshape(len(prompts), len(answers))
    log_odds = torch.logsumexp(lps[:, : len(UK_TEAMS)], 1) - torch.logsumexp(
        lps[:, len(UK_TEAMS) :], 1
    )
    greedy = greedy_continuations(model, prompts, max_new_tokens=8)
    rows: list[dict[str, dict[str, Any]]] = []
    for k in range(len(DIALECT_PAIRS)):
        rows.append(
            {
                cue: {
                    "prompt": prompts[2 * k + j],
                    "uk_vs_us_log_odds": float(log_odds[2 * k + j]),
                    "greedy": greedy[2 * k + j],
                }
                for j, cue in enumerate(("uk", "us"))
            }
        )
    follows = sum(r["uk"]["uk_vs_us_log_odds"] > 0 > r["us"]["uk_vs_us_log_odds"] for r in rows)
    return {"pairs": rows, "pairs_where_answer_follows_cue": follows, "n_pairs": len(rows)}


def print_probe_summary(summary: list[dict[str, Any]]) -> None:
    print(
        "\nattribute       classes     n  best layer  accuracy [95% CI]       selectivity  "
        "majority  bag of words"
    )
    for row in summary:
        bow = f"{row['bow_accuracy']:.3f}" if row["bow_accuracy"] is not None else "  n/a"
        print(
            f"{row['attribute']:<15} {row['classes']:>7} {row['n']:>5} {row['best_layer']:>11}  "
            f"{row['accuracy']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]  "
            f"{row['selectivity']:>+11.3f}  {row['majority']:>8.3f}  {bow:>12}"
        )


def print_intervention_summary(result: dict[str, Any]) -> None:
    """Steering, patching and erasure in a few lines."""
    steering = result.get("steering")
    if steering:
        from probes.pipeline.interventions import print_steering_summary

        print(f"\nsteering {result['attribute']}:")
        print_steering_summary(steering["summary"])
    patching = result.get("patching")
    if patching:
        import numpy as np

        restored = np.asarray(patching["restored"], dtype=float)
        last = patching["columns"].index("last token")
        entered = [
            layer
            for layer, value in zip(patching["layers"], restored[:, last], strict=True)
            if value >= 0.5
        ]
        where = f"from layer {entered[0]}" if entered else "at no patched layer"
        print(f"patching: the last token carries >= half of the cue's effect {where}")
    erasure = result.get("erasure")
    if erasure:
        first = erasure["rows"][0]
        band = erasure["band"]
        print(
            f"erasure: LEACE at layer {erasure['erased_layer']} puts a fresh probe on unseen "
            f"families at {first['accuracy_after']:.3f} (chance {erasure['chance']:.3f}; "
            f"in-sample {erasure['in_sample_accuracy_after']:.3f}); with layers "
            f"{band['band'][0]}-{band['band'][-1]} erased {band['remaining_erased']:.0%} of the "
            f"cue's effect remains, ablated {band['remaining_ablated']:.0%}"
        )


def print_mediation_summary(result: dict[str, Any]) -> None:
    """Per case study: the total effect and the layer where the most is mediated."""
    print("\nmediation (last-token mediator; TE, and the best layer's NIE / proportion):")
    for name, payload in result.items():
        for mediator, rows in payload["results"].items():
            best = max(rows, key=lambda r: abs(r["nie"]["mean"]))
            te = best["te"]
            share = best["proportion_mediated"]
            share_text = f"{share:.2f}" if share is not None else "n/a"
            print(
                f"  {name:<13} {mediator:<9} TE {te['mean']:+.2f} (p {te['p']:.3g}); "
                f"layer {best['layer']}: NIE {best['nie']['mean']:+.2f}, proportion {share_text}"
            )


def print_audit_summary(audit: dict[str, Any]) -> None:
    """PB with its interval, the permutation test, tier-1 flags and the mitigation."""
    from probes.audit.result import AuditResult

    result = AuditResult.from_dict(audit)
    pb, perm = result.pb, result.bias.permutation_p
    flagged = [r["persona"] for r in result.tier1["rows"] if r["flagged"]]
    print(
        f"\npersona audit ({result.n_personas} personas, {result.n_utility_items} questions, "
        f"{result.n_safety_items} requests): PB {pb['estimate']:.3f} "
        f"[{pb['low']:.3f}, {pb['high']:.3f}]; does the persona matter? permutation p "
        f"{perm['safety_log_odds']:.3g} (safety), "
        f"{perm['utility_margin']:.3g} (utility); "
        f"tier 1 flags {len(flagged)}: {', '.join(flagged) or 'none'}"
    )
    mitigation = result.mitigation
    if mitigation:
        after = mitigation.pb_after.pb
        print(
            f"  mitigation (persona directions ablated at layers {mitigation.layers}): PB -> "
            f"{after['estimate']:.3f}; utility {mitigation.utility_change['estimate']:+.3f}; "
            f"KL on neutral text {mitigation.neutral_kl:.3f} nats"
        )


@dataclass(frozen=True)
class RunOptions:
    """What ``probes run`` was asked: None means the config's (or the default) value."""

    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    config: str | Path | None = None
    quick: bool = False
    out: str | Path | None = None
    fresh: bool = False
    trust_remote_code: bool = False
    allow_pickle: bool = False


def run_main_job(options: RunOptions) -> int:
    """Run the configured stages into one run folder, write results.json and report.html."""
    from probes.models.loading import load_model
    from probes.pipeline.config import load_config

    config = load_config(
        options.config,
        quick=options.quick,
        model=options.model,
        device=options.device,
        dtype=options.dtype,
    )
    start = time.perf_counter()
    out = Path(options.out) if options.out else default_run_dir()
    make_dirs(out)
    seconds: dict[str, float] = {}
    from probes.models.loading import EMBEDDED_SPEC, convert_embedded, is_converted

    if config.model == EMBEDDED_SPEC and not is_converted():
        convert_embedded()  # the one-off conversion, timed on its own
        seconds["one_off_conversion"] = round(time.perf_counter() - start, 1)
    model = load_model(
        config.model,
        device=config.device,
        dtype=config.dtype,
        trust_remote_code=options.trust_remote_code,
        allow_pickle=options.allow_pickle,
    )
    if (
        options.quick
        and config.dtype == "bfloat16"
        and load_config(options.config, device=options.device, dtype=options.dtype).dtype is None
    ):  # the dtype is --quick's choice, not the config's or --dtype's
        say(
            "--quick runs the model in bfloat16, which this CPU multiplies natively (faster "
            "than float32, same findings); --dtype float32 gives the full run's precision"
        )
    loaded = time.perf_counter() - start - seconds.get("one_off_conversion", 0.0)
    seconds["load_model"] = round(loaded, 1)
    from dataclasses import asdict

    from probes.models.loading import probes_home
    from probes.pipeline.stage_cache import StageCache

    cache = StageCache(probes_home() / "stages", reuse=not options.fresh)
    from probes.pipeline.stage_cache import model_key

    # the weights fingerprint does not cover the HF config (soft-cap, rope...): key on it too,
    # but not on where the model folder is (StageRunner drops the location)
    identity = {**model.describe(), **model_key(model)}
    runner = StageRunner(cache, identity, out, say=say)
    # Every stage reads the same stores (the probes stage's size, every layer, last token), so
    # a run extracts each dataset once.
    size = config.probes.size
    stages: dict[str, Any] = {}
    if "first_look" in config.stages:
        t = time.perf_counter()
        stages["dialect_first_look"] = runner.run(
            "first look", "first_look", {}, lambda: dialect_first_look(model)
        )
        seconds["first_look"] = round(time.perf_counter() - t, 1)
    if "probes" in config.stages:
        t = time.perf_counter()
        stages["probes"] = stage_probes(model, config.probes, runner, shared_positions(config))
        seconds["probes"] = round(time.perf_counter() - t, 1)
    if "transfer" in config.stages:
        from probes.pipeline.transfer import stage_transfer

        t = time.perf_counter()
        stages["transfer"] = stage_transfer(
            model,
            config.transfer,
            config.probes,
            runner,
            probe_layers(model, config.probes),
            stages.get("probes"),
        )
        seconds["transfer"] = round(time.perf_counter() - t, 1)
    chosen = tuple(s for s in ("steering", "patching", "erasure") if s in config.stages)
    if chosen:
        from probes.pipeline.stages import stage_interventions

        t = time.perf_counter()
        stages["interventions"] = runner.run(
            "interventions",
            "interventions",
            {"settings": asdict(config.interventions), "parts": chosen, "store_size": size},
            lambda: stage_interventions(model, config.interventions, out, config.stages, size),
        )
        seconds["interventions"] = round(time.perf_counter() - t, 1)
    if "mediation" in config.stages:
        from probes.pipeline.stages import stage_mediation

        t = time.perf_counter()
        stages["mediation"] = stage_mediation(model, config.mediation, runner, size)
        seconds["mediation"] = round(time.perf_counter() - t, 1)
    if "audit" in config.stages:
        from probes.pipeline.stages import audit_tailoring, stage_audit

        t = time.perf_counter()
        tailoring = audit_tailoring(stages)
        stages["audit"] = runner.run(
            "audit",
            "audit",
            {"settings": asdict(config.audit), "tailoring": tailoring, "store_size": size},
            lambda: stage_audit(model, config.audit, out, tailoring, size),
        )
        seconds["audit"] = round(time.perf_counter() - t, 1)
    if "readers" in config.stages:
        from probes.pipeline.readers import stage_readers

        t = time.perf_counter()
        readers = config.readers
        stages["readers"] = stage_readers(
            model,
            readers.attributes or config.probes.attributes,
            out,
            readers.size or config.probes.size,
            options.fresh,
        )
        seconds["readers"] = round(time.perf_counter() - t, 1)
    seconds["total"] = round(time.perf_counter() - start, 1)
    results = {
        "probes_version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "model": model.describe(),
        "config": config.to_dict(),
        "quick": bool(options.quick),
        "stages": stages,
        "seconds": seconds,
        "reused": runner.reused,
    }
    atomic_write_json(out / "results.json", results)
    from probes.report.run import write_run_report

    report = write_run_report(out, results)

    print(f"\nmodel {model.name}: {model.n_layers} layers, d_model {model.d_model}")
    if "dialect_first_look" in stages:
        look = stages["dialect_first_look"]
        print(
            "UK-cue vs US-cue twins: log-odds of a UK club vs a US team next, and the greedy answer"
        )
        for row in look["pairs"]:
            for cue in ("uk", "us"):
                r = row[cue]
                print(f"  [{cue}] {r['uk_vs_us_log_odds']:+6.2f}  {r['prompt']}{r['greedy']!r}")
        follows, n_pairs = look["pairs_where_answer_follows_cue"], look["n_pairs"]
        print(f"the answer follows the cue (UK positive, US negative) in {follows}/{n_pairs} pairs")
    if "transfer" in stages:
        from probes.pipeline.transfer import print_transfer_summary

        print_transfer_summary(stages["transfer"])
    if "probes" in stages:
        print("\nin distribution (held-out template families of the templated sets):")
        print_probe_summary(stages["probes"]["summary"])
    if "interventions" in stages:
        print_intervention_summary(stages["interventions"])
    if "mediation" in stages:
        print_mediation_summary(stages["mediation"])
    if "audit" in stages:
        print_audit_summary(stages["audit"])
    if "readers" in stages:
        print(f"\nreader bundle for the dashboard: {out / 'readers'} (probes dashboard --readers)")
    print(
        f"\nresults in {out / 'results.json'}, figures in {out / 'figures'} ({seconds['total']} s)"
    )
    print(f"report: {report}")
    if "one_off_conversion" in seconds:
        print(
            f"of the {seconds['total']} s, {seconds['one_off_conversion']} s was the one-off "
            "conversion of the embedded model (later runs skip it)"
        )
    return 0
