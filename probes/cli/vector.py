"""`probes vector export` and `probes vector import`: steering directions out to llama.cpp
control vectors (GGUF) or per-layer safetensors, and such files back in as saved directions."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probes.cli.args import add_model_args
from probes.datasets.cues import STEERABLE
from probes.errors import ProbesError

VECTOR_HELP = (
    "saved directions: .json/.safetensors artefacts (or their stem) from `probes steer --out` "
    "or a `probes run` folder, or a folder holding them (every direction_*.json inside); "
    "several make one multi-layer file"
)


def _direction_files(specs: Sequence[str]) -> list[Path]:
    """The ``.json`` halves of the saved directions named by files, stems or folders."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            inside = sorted(path.rglob("direction_*.json"))
            if not inside:
                raise ProbesError(f"{path} holds no saved direction (direction_*.json)")
            found += inside
            continue
        stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
        if not Path(f"{stem}.json").is_file():
            raise ProbesError(f"{spec} is not a saved direction (no {stem}.json)")
        found.append(Path(f"{stem}.json"))
    return found


def load_directions(specs: Sequence[str]) -> list[Any]:
    """Saved directions, one attribute and one per (site, layer), sorted by layer."""
    from probes.directions import Direction

    directions = [Direction.load(p) for p in _direction_files(specs)]
    attributes = sorted({d.attribute for d in directions})
    if len(attributes) > 1:
        raise ProbesError(
            f"the directions are for several attributes ({', '.join(attributes)}); "
            "export one attribute per file"
        )
    seen: set[tuple[str, int]] = set()
    for d in directions:
        if (d.site, d.layer) in seen:
            raise ProbesError(f"two directions at {d.site} of layer {d.layer}; name one of them")
        seen.add((d.site, d.layer))
    return sorted(directions, key=lambda d: (d.layer, d.site))


def _handle_export(args: argparse.Namespace) -> int:
    from probes.models.loading import load_model
    from probes.vectors.files import ModelShape, control_layer, model_hint, write_control_vector

    directions = load_directions(args.vector)
    shape = ModelShape.of(load_model(args.model, device="cpu"))
    out = write_control_vector(args.out, directions, args.strength, shape, args.format)
    lowest = 1 if args.format == "gguf" else 0
    for d in directions:
        print(
            f"{d.site} of layer {d.layer} -> direction.{control_layer(d, lowest=lowest)}: "
            f"{args.strength:g} x typical norm {d.typical_norm:.1f} ({d.method}, "
            f"{d.source} -> {d.target})"
        )
    print(f"wrote {out} ({args.format}, model hint {model_hint(shape.model_type)})")
    if args.format == "gguf":
        print(
            f"llama.cpp: --control-vector-scaled {out} 1.0 applies the suite's steering at "
            f"strength {args.strength:g}; --control-vector-scaled {out} c applies c x that"
        )
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ProbesError(f"expected comma-separated numbers, got {text!r}") from exc


def _handle_import(args: argparse.Namespace) -> int:
    from probes.models.loading import load_model
    from probes.vectors.files import ModelShape, check_fits, read_control_vector

    cv = read_control_vector(args.file)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    check_fits(cv, ModelShape.of(model), where=str(args.file))
    own = bool(cv.model)
    print(
        f"{args.file}: {cv.source_format}, {len(cv.layers)} layer(s), model hint "
        f"{cv.model_hint or '(none)'}; "
        + (
            f"exported by the suite at strength {cv.strength:g}"
            if own
            else "from another tool: strength 1 = the file at scale 1"
        )
    )
    for d in cv.directions:
        print(
            f"  {d.site} of layer {d.layer}: |vector| {float(d.vector.norm()):.2f}, typical norm "
            f"{d.typical_norm:.2f}, {d.method} {d.source or '?'} -> {d.target or '?'}"
        )
    if args.out is None:
        if args.sweep:
            raise ProbesError("--sweep writes results.json: pass --out DIR")
        return 0
    out = Path(args.out)
    name = cv.directions[0].attribute or "imported"
    for d in cv.directions:
        d.save(out / f"direction_{name}_layer{d.layer}")
    print(f"saved {len(cv.directions)} direction(s) as {out}/direction_{name}_layer*.json")
    if args.sweep:
        _sweep(model, list(cv.directions), args, out)
    return 0


def _sweep(model: Any, directions: list[Any], args: argparse.Namespace, out: Path) -> None:
    """The suite's sweep (one cell per layer) and the damage of the whole band."""
    from probes.atomic import atomic_write_json
    from probes.behavior.scoring import neutral_texts, perplexity
    from probes.datasets import load_behavior_items
    from probes.interventions.hooks import steer
    from probes.interventions.steering import sweep

    strengths = _floats(args.sweep)
    items = load_behavior_items(args.attribute)[: args.items]
    result = sweep(model, directions, items, strengths, progress=False)
    print(f"sweep on {len(items)} {args.attribute} items (one layer at a time):")
    print("kind       layer  strength  mean shift  flip rate  KL (nats)")
    for row in result.rows:
        print(
            f"{row['kind']:<9}  {row['layer']:>5}  {row['strength']:>+8g}  "
            f"{row['mean_shift']:>+10.3f}  {row['flip_rate']:>9.0%}  {row['kl_mean']:>9.3f}"
        )
    strongest = max(strengths, key=abs)
    before = perplexity(model, neutral_texts())
    with steer(model, directions, strongest):  # the whole file, every layer at once
        after = perplexity(model, neutral_texts())
    damage = {"strength": strongest, "perplexity_before": before, "perplexity_after": after}
    print(
        f"perplexity of neutral text: {before:.2f} -> {after:.2f} with the whole file at "
        f"strength {strongest:g}"
    )
    atomic_write_json(
        out / "results.json",
        {
            "model": model.describe(),
            "file": str(args.file),
            "sweep": result.to_dict(),
            "perplexity": damage,
        },
    )
    print(f"results: {out / 'results.json'}")


def register(subparsers: argparse._SubParsersAction) -> None:
    v = subparsers.add_parser(
        "vector", help="steering vectors out to llama.cpp / safetensors, and in from them"
    )
    sub = v.add_subparsers(dest="vector_command", metavar="ACTION", parser_class=type(v))
    sub.required = True

    e = sub.add_parser("export", help="write saved directions as one control-vector file")
    e.add_argument("vector", nargs="+", help=VECTOR_HELP)
    e.add_argument(
        "--strength",
        type=float,
        required=True,
        help="steering strength (x the layer's typical norm) that scale 1.0 applies",
    )
    e.add_argument("--format", default="gguf", choices=["gguf", "safetensors"])
    e.add_argument("--out", required=True, help="the file to write")
    e.add_argument("--model", default="gemma-3-270m", help="the model the directions are for")
    e.set_defaults(func=_handle_export)

    i = sub.add_parser(
        "import", help="read a GGUF control vector or per-layer safetensors into directions"
    )
    i.add_argument("file", help="a .gguf control vector (llama.cpp, repeng) or .safetensors")
    add_model_args(i)
    i.add_argument("--out", default=None, help="save the directions here (direction_*.json)")
    i.add_argument("--sweep", default=None, help="also sweep these strengths, e.g. -1,-0.5,0.5,1")
    i.add_argument(
        "--attribute", default="dialect", choices=sorted(STEERABLE), help="items for --sweep"
    )
    i.add_argument("--items", type=int, default=None, help="sweep only the first N items")
    i.set_defaults(func=_handle_import)
