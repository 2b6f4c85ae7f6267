"""The transfer stage of `probes run`: per attribute, settings chosen on other styles, then one
score on the hand-written held-out corpus, and whether the probe's reading predicts tailoring.

Training styles are the templated set, the conversation set and any user files; the hand-written
chatty corpus and the conversation set are the validation styles (leave-one-style-out chooses
position, frame, C and layer). The held-out corpus is read once, at the chosen setting. Where an
attribute has no held-out corpus, the chatty corpus becomes its test and only the conversation
set validates (the report says so).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probes.models.loading import LoadedModel
from probes.pipeline.config import ProbeStageConfig, TransferStageConfig
from probes.pipeline.messages import say
from probes.pipeline.stage_cache import StageRunner

# The behaviour attribute whose answer tailoring a probe dataset's reading should predict.
BEHAVIOUR_OF = {"dialect_us_uk": "dialect", "proficiency": "proficiency", "belief": "belief"}
# Chen, Arditi, Sleight, Evans and Lindsey (2025), "Persona vectors", arXiv:2507.21509: r between
# a last-prompt-token projection on the persona vector and trait expression.
PERSONA_VECTOR_R = (0.75, 0.83)
MAX_GAP = 0.20  # in-distribution above transfer by more than this: the report warns


def _styles_for(name: str, cfg: TransferStageConfig, pcfg: ProbeStageConfig) -> dict[str, Any]:
    """The training styles, validation style names and the test set of one attribute."""
    from probes.datasets import heldout_corpus, load_dataset, transfer_corpus
    from probes.datasets.conversations import conversation_names
    from probes.datasets.labels import align_labels, parse_label_map
    from probes.errors import DatasetError

    label_map = parse_label_map(cfg.label_map)
    templated = load_dataset(name, size=cfg.template_size or pcfg.size, seed=pcfg.seed)
    labels = templated.labels
    styles = {"templated": templated}
    if cfg.conversation_size and f"{name}_conv" in conversation_names():
        styles["conversations"] = load_dataset(f"{name}_conv", size=cfg.conversation_size)
    for item in cfg.train_files:
        attribute, _, path = item.partition("=")
        if attribute == name:
            styles[Path(path).stem] = load_dataset(path, attribute=templated.attribute)
    try:
        chatty = transfer_corpus(name)
    except DatasetError:
        chatty = None
    try:
        test, test_name = heldout_corpus(name), "held-out corpus"
    except DatasetError:
        test, test_name = None, ""
    if test is None and chatty is not None:
        test, test_name, chatty = chatty, "chatty corpus (no held-out corpus)", None
    if chatty is not None:
        styles["chatty"] = chatty
    aligned = {k: align_labels(ds, labels, label_map) for k, ds in styles.items()}
    validation = [k for k in ("conversations", "chatty") if k in aligned]
    return {
        "styles": aligned,
        "validation": validation,
        "test": None if test is None else align_labels(test, labels, label_map),
        "test_name": test_name,
    }


def _stores(
    model: LoadedModel, dataset: Any, settings: Sequence[str], pcfg: ProbeStageConfig
) -> dict[str, Any]:
    """One dataset's all-layer store per setting (``position/frame``); the positions of one
    frame that read the same tokens ("last", "mean") share one forward pass."""
    from probes.cache.extraction import extract_dataset, extract_dataset_positions
    from probes.datasets import RenderSpec
    from probes.readers.bundle import reading_suffix

    common: dict[str, Any] = {"layers": "all", "batch_size": pcfg.batch_size, "progress": False}
    out: dict[str, Any] = {}
    for frame in dict.fromkeys(s.split("/")[1] for s in settings):
        spec = RenderSpec(frame=frame)  # type: ignore[arg-type]
        positions = [s.split("/")[0] for s in settings if s.split("/")[1] == frame]
        shared = [p for p in positions if p != "suffix"]
        if shared:
            stores = extract_dataset_positions(model, dataset, shared, render_spec=spec, **common)
            out.update({f"{p}/{frame}": st for p, st in zip(shared, stores, strict=True)})
        if "suffix" in positions:
            suffix = reading_suffix(dataset.attribute)
            out[f"suffix/{frame}"] = extract_dataset(
                model, dataset, position="suffix", suffix=suffix, render_spec=spec, **common
            )
    return {s: out[s] for s in settings}


def transfer_attribute(
    model: LoadedModel,
    cfg: TransferStageConfig,
    pcfg: ProbeStageConfig,
    layers: list[int] | None,
    name: str,
) -> dict[str, Any]:
    """Selection, the held-out score and (for behaviour attributes) the read-out correlation."""
    from probes.probing.selection import Style, score_on_test, select_settings, setting_key

    parts = _styles_for(name, cfg, pcfg)
    if parts["test"] is None or not parts["validation"]:
        return {"skipped": "no held-out or chatty corpus to validate and test on"}
    settings = [setting_key(p, f) for p in cfg.positions for f in cfg.frames]
    sizes = {k: len(ds) for k, ds in parts["styles"].items()}
    say(f"transfer: {name}, styles {sizes}, settings {settings}, C {list(cfg.Cs)}")
    styles = [Style(k, _stores(model, ds, settings, pcfg)) for k, ds in parts["styles"].items()]
    selection = select_settings(
        styles,
        validation=parts["validation"],
        Cs=cfg.Cs,
        layers=layers,
        attribute=parts["styles"]["templated"].attribute,
    )
    say(f"transfer: {name} chose {selection.reason}")
    chosen = selection.chosen["setting"]
    test_store = _stores(model, parts["test"], [chosen], pcfg)[chosen]
    report = score_on_test(
        selection, styles, test_store, test_name=parts["test_name"], n_boot=cfg.n_boot
    )
    unit: dict[str, Any] = {
        "selection": selection.to_dict(),
        "report": report.to_dict(),
        "style_sizes": sizes,
    }
    if cfg.readout and name in BEHAVIOUR_OF:
        unit["readout"] = readout(model, selection, styles, BEHAVIOUR_OF[name], pcfg, cfg.n_boot)
    return unit


def readout(
    model: LoadedModel,
    selection: Any,
    styles: list[Any],
    attribute: str,
    pcfg: ProbeStageConfig,
    n_boot: int,
) -> dict[str, Any]:
    """Per behaviour item: the probe's reading (chosen layer) against the answer's tailoring."""
    from probes import stats
    from probes.behavior.scoring import behavior_log_odds
    from probes.datasets import load_behavior_items
    from probes.datasets.cues import CUES
    from probes.datasets.schema import Dataset
    from probes.probing.selection import probe_readings

    items = load_behavior_items(attribute)
    cues = CUES[attribute]
    examples = tuple(item.as_example() for item in items)
    labels = tuple(dict.fromkeys(ex.label for ex in examples))
    ds = Dataset(f"{attribute}_behaviour", examples[0].attribute, labels, examples)
    chosen = selection.chosen["setting"]
    store = _stores(model, ds, [chosen], pcfg)[chosen]
    reading = probe_readings(selection, styles, store, cues.raising)
    tailoring = behavior_log_odds(model, items).double().numpy()
    clusters = [item.pair_id or item.id for item in items]
    r, low, high = stats.correlation_interval(reading, tailoring, clusters, n_boot, seed=0)
    return {
        "attribute": attribute,
        "n_items": len(items),
        "positive_label": cues.raising,
        "layer": int(selection.chosen["layer"]),
        "setting": selection.chosen["setting"],
        "r": r,
        "ci_low": low,
        "ci_high": high,
        "spearman": float(stats.spearman(reading, tailoring)),
        "persona_vector_r": list(PERSONA_VECTOR_R),
        "reading": [float(v) for v in reading],
        "tailoring": [float(v) for v in tailoring],
    }


def transfers(name: str, cfg: TransferStageConfig) -> bool:
    """Whether the transfer stage covers a probed attribute dataset."""
    return name != "personas" and (not cfg.attributes or name in cfg.attributes)


def stage_transfer(
    model: LoadedModel,
    cfg: TransferStageConfig,
    pcfg: ProbeStageConfig,
    runner: StageRunner,
    layers: list[int] | None,
    probes: dict[str, Any] | None,
) -> dict[str, Any]:
    """Every probed attribute as its own cached unit, the summary rows and the figure."""
    from dataclasses import asdict

    from probes.viz.export import save_figure
    from probes.viz.probing import plot_transfer_bars

    probe_settings = asdict(pcfg)
    for unused in ("attributes", "reading_attribute"):  # another attribute changes no unit
        probe_settings.pop(unused)
    settings = asdict(cfg)
    settings.pop("attributes")
    inputs = {"settings": settings, "probes": probe_settings, "layers": layers}
    results: dict[str, Any] = {}
    for name in pcfg.attributes:
        if not transfers(name, cfg):
            continue
        results[name] = runner.run(
            f"transfer: {name}",
            "transfer",
            {**inputs, "attribute": name},
            functools.partial(transfer_attribute, model, cfg, pcfg, layers, name),
        )
    in_dist = {r["attribute"]: r for r in (probes or {}).get("summary", [])}
    summary = [
        transfer_row(name, unit, in_dist) for name, unit in results.items() if "report" in unit
    ]
    if summary:
        bars = [
            {"attribute": r["attribute"], "probe_accuracy": r["transfer"], **r} for r in summary
        ]
        fig = plot_transfer_bars(
            bars,
            title="trained on templates + conversations, tested on the held-out corpus",
            probe_name="probe (settings and layer chosen on other styles)",
        )
        save_figure(fig, runner.out / "figures" / "transfer_heldout")
    readouts = [unit["readout"] for unit in results.values() if "readout" in unit]
    return {"results": results, "summary": summary, "readout": readouts}


def transfer_row(name: str, unit: dict[str, Any], in_dist: dict[str, Any]) -> dict[str, Any]:
    """The summary table's row: in-distribution, headline transfer, optimistic, BoW, ECE."""
    rep, chosen = unit["report"], unit["selection"]["chosen"]
    attribute = rep["attribute"]
    inside = in_dist.get(attribute)
    row: dict[str, Any] = {
        "attribute": attribute,
        "dataset": name,
        "test": rep["test"],
        "n_test": rep["n_test"],
        "in_distribution": None if inside is None else inside["accuracy"],
        "in_distribution_layer": None if inside is None else inside["best_layer"],
        "setting": chosen["setting"],
        "C": chosen["C"],
        "layer": rep["layer"],
        "transfer": rep["accuracy"],
        "ci_low": rep["ci_low"],
        "ci_high": rep["ci_high"],
        "best_layer": rep["best_layer"],
        "best_layer_accuracy": rep["best_layer_accuracy"],
        "bow_accuracy": rep["bow_accuracy"],
        "in_set_accuracy": rep["in_set_accuracy"],
        "ece": rep["ece"],
        "chance": rep["chance"],
    }
    gap = None if inside is None else inside["accuracy"] - rep["accuracy"]
    row["warning"] = bool(gap is not None and gap > MAX_GAP)
    return row


def print_transfer_summary(result: dict[str, Any]) -> None:
    """The transfer table (the headline) and the read-out correlations."""
    print(
        "\ntransfer (settings chosen on other styles; test: the held-out corpus)\n"
        "attribute       in-dist  chosen (setting, C, layer)   transfer [95% CI, families]  "
        "best layer (optimistic)  BoW    in-set  ECE"
    )
    for r in result["summary"]:
        inside = "  n/a" if r["in_distribution"] is None else f"{r['in_distribution']:.3f}"
        chosen = f"{r['setting']}, {r['C']:g}, {r['layer']}"
        flag = "  ! in-distribution exceeds transfer by > 20 points" if r["warning"] else ""
        print(
            f"{r['attribute']:<15} {inside:>7}  {chosen:<27}  {r['transfer']:.3f} "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]       {r['best_layer_accuracy']:.3f} "
            f"({r['best_layer']:>2})             {r['bow_accuracy']:.3f}  "
            f"{r['in_set_accuracy']:.3f}   {r['ece']:.3f}{flag}"
        )
    for ro in result.get("readout", []):
        print(
            f"read-out vs tailoring, {ro['attribute']} ({ro['n_items']} items, layer "
            f"{ro['layer']}): r = {ro['r']:+.2f} [{ro['ci_low']:+.2f}, {ro['ci_high']:+.2f}] "
            f"(persona vectors: {PERSONA_VECTOR_R[0]}-{PERSONA_VECTOR_R[1]})"
        )
