"""Fit a reader bundle: per attribute, a reading probe at TalkTuner's suffix and a control probe
at the last prompt token, each at the layer chosen on held-out template families, and
one-vs-rest steering directions per class at every layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from probes.cache.extraction import extract_dataset_positions
from probes.cache.positions import PositionSpec
from probes.cache.store import ActivationStore
from probes.datasets import RenderSpec, load_dataset, render
from probes.datasets.builtin import PROBED_DATASETS
from probes.directions import typical_norm
from probes.errors import ProbesError
from probes.models.batching import encode
from probes.models.loading import LoadedModel
from probes.probing.layerwise import LayerwiseResult, fit_layerwise
from probes.probing.linear import FittedProbe, LinearProbe
from probes.readers.bundle import Reader, ReaderBundle, reading_suffix

READER_ATTRIBUTES: tuple[str, ...] = PROBED_DATASETS
LAYER_TOLERANCE = 0.02  # the earliest layer within this much held-out accuracy of the best


def chat_frame(tokenizer: Any) -> str:
    """The frame a chat with this model uses: its chat template, else ``User:/Assistant:``."""
    return "template" if getattr(tokenizer, "chat_template", None) else "chat"


def choose_layer(result: LayerwiseResult, tolerance: float = LAYER_TOLERANCE) -> int:
    """The earliest layer whose held-out-family accuracy is within ``tolerance`` of the best.

    Earlier layers make the dashboard's reading pass shorter; the loss is bounded by
    ``tolerance``."""
    best = max(r["accuracy"] for r in result.rows)
    return int(min(r["layer"] for r in result.rows if r["accuracy"] >= best - tolerance))


def prompt_ends(
    model: LoadedModel, dataset: Any, plain: RenderSpec, suffixed: RenderSpec
) -> tuple[int, ...]:
    """Per row, the index of the prompt's last token inside the tokens of prompt + suffix (the
    end of their common prefix, should the suffix's first token merge with the prompt's last)."""
    prompts = render(dataset, plain, tokenizer=model.tokenizer)
    joined = render(dataset, suffixed, tokenizer=model.tokenizer)
    ends = []
    for alone, both in zip(
        encode(model.tokenizer, prompts), encode(model.tokenizer, joined), strict=True
    ):
        common = 0
        while common < min(len(alone), len(both)) and alone[common] == both[common]:
            common += 1
        ends.append(max(common - 1, 0))
    return tuple(ends)


def _final_probe(store: ActivationStore, layer: int, C: float, attribute: str) -> FittedProbe:
    """The probe refitted on every row at ``layer`` (the held-out scores come from CV)."""
    fitted = LinearProbe(C=C).fit(store.get(layer).float(), [str(y) for y in store.labels]).fitted_
    return FittedProbe(
        classes=fitted.classes,
        mean=fitted.mean,
        scale=fitted.scale,
        weight=fitted.weight,
        bias=fitted.bias,
        C=fitted.C,
        layer=layer,
        site="resid_post",
        attribute=attribute,
    )


def class_directions(
    store: ActivationStore, classes: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-vs-rest mean differences ``[layers, classes, d]`` and the typical norms ``[layers]``."""
    stacked = store.stack().double()  # [n, layers, d]
    labels = [str(y) for y in store.labels]
    rows = []
    for cls in classes:
        mine = torch.as_tensor([y == cls for y in labels])
        rows.append(stacked[mine].mean(0) - stacked[~mine].mean(0))
    norms = torch.tensor([typical_norm(stacked[:, k]) for k in range(stacked.shape[1])])
    return torch.stack(rows, dim=1).float(), norms.float()


def train_reader(
    model: LoadedModel,
    dataset_name: str,
    *,
    size: int | None = None,
    seed: int = 0,
    frame: str | None = None,
    C: float = 1.0,
    folds: int = 5,
    batch_size: int = 16,
    progress: bool = True,
) -> Reader:
    """One attribute's reader (two all-layer stores, extracted or reused from the cache)."""
    dataset = load_dataset(dataset_name, size=size, seed=seed)
    spec_frame = frame or chat_frame(model.tokenizer)
    suffix = reading_suffix(dataset.attribute)
    common: dict[str, Any] = {"layers": "all", "batch_size": batch_size, "progress": progress}
    # One pass over prompt + suffix reads both probes: the suffix's last token, and the prompt's
    # last token (causal attention: the same activations as the prompt alone, as the dashboard
    # reads them from its cache before it appends the suffix).
    suffixed = RenderSpec(spec_frame, suffix=suffix)  # type: ignore[arg-type]
    ends = prompt_ends(model, dataset, RenderSpec(spec_frame), suffixed)  # type: ignore[arg-type]
    read, last = extract_dataset_positions(
        model,
        dataset,
        ["last", PositionSpec("index", indices=ends)],
        render_spec=suffixed,
        **common,
    )
    stores = {"reading": read, "control": last}
    settings: dict[str, Any] = {
        "n_folds": folds, "C": C, "n_boot": 200, "seed": seed, "bow": False,
        "attribute": dataset.attribute,
    }  # fmt: skip
    # Every layer without the shuffled-label control, which is only reported at the chosen
    # layer: fitted there alone (same folds and shuffles), it halves the stage's fits.
    fits = {kind: fit_layerwise(st, control=False, **settings) for kind, st in stores.items()}
    layers = {kind: choose_layer(fit) for kind, fit in fits.items()}
    scores: dict[str, Any] = {"n_examples": len(dataset), "splits": fits["reading"].splits}
    for kind, fit in fits.items():
        row = next(r for r in fit.rows if r["layer"] == layers[kind])
        at_layer = fit_layerwise(stores[kind], layers=[layers[kind]], **settings).rows[0]
        scores[f"{kind}_accuracy"] = row["accuracy"]
        scores[f"{kind}_shuffled_label_accuracy"] = at_layer["control_accuracy"]
        scores[f"{kind}_best_accuracy"] = fit.best()["accuracy"]
        scores[f"{kind}_best_layer"] = fit.best_layer
    scores["majority_accuracy"] = fits["reading"].majority_accuracy
    scores["by_layer"] = {  # the curves of both probes (`probes.viz.plot_reader_curves`)
        kind: [{k: r[k] for k in ("layer", "accuracy", "ci_low", "ci_high")} for r in fit.rows]
        for kind, fit in fits.items()
    }
    classes = tuple(fits["reading"].labels)
    directions, norms = class_directions(last, classes)
    return Reader(
        attribute=dataset.attribute,
        dataset=dataset_name,
        dataset_hash=dataset.content_hash(),
        classes=classes,
        suffix=suffix,
        reading=_final_probe(read, layers["reading"], C, dataset.attribute),
        control=_final_probe(last, layers["control"], C, dataset.attribute),
        directions=directions,
        typical_norms=norms,
        scores=scores,
    )


def train_readers(
    model: LoadedModel,
    attributes: Sequence[str] = READER_ATTRIBUTES,
    *,
    size: int | None = None,
    seed: int = 0,
    frame: str | None = None,
    on_attribute: Callable[[int, int, str], None] | None = None,
    **kwargs: Any,
) -> ReaderBundle:
    """A bundle with one reader per built-in attribute dataset in ``attributes``."""
    if not attributes:
        raise ProbesError("name at least one attribute dataset to fit readers for")
    frame = frame or chat_frame(model.tokenizer)
    readers: dict[str, Reader] = {}
    for i, name in enumerate(attributes):
        if on_attribute is not None:
            on_attribute(i, len(attributes), name)
        reader = train_reader(model, name, size=size, seed=seed, frame=frame, **kwargs)
        readers[reader.attribute] = reader
    return ReaderBundle(
        model_name=model.name,
        fingerprint=model.fingerprint,
        frame=frame,
        n_layers=model.n_layers,
        readers=readers,
        meta={"size": size, "seed": seed, "layer_rule": f"earliest within {LAYER_TOLERANCE}"},
    )
