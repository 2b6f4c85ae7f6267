"""Reader bundles through a content-addressed cache: fitted once per model, attributes, size and
suite version, then reused by ``probes run`` (which copies one into its run folder) and by the
dashboard (which fits one on first start when it is given none)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from probes.errors import ProbesError
from probes.models.loading import LoadedModel, probes_home
from probes.pipeline.messages import say
from probes.pipeline.stage_cache import model_key, stage_key
from probes.readers import READER_ATTRIBUTES, ReaderBundle, train_readers
from probes.readers.bundle import BUNDLE_NAME

READER_SIZE = 128  # examples per attribute dataset (whole twin sets); the dashboard's default


def readers_cache_root() -> Path:
    return probes_home() / "readers"


def cached_readers(
    model: LoadedModel,
    attributes: Sequence[str] = READER_ATTRIBUTES,
    *,
    size: int | None = READER_SIZE,
    root: Path | None = None,
    fresh: bool = False,
    say: Callable[[str], None] | None = None,
    progress: bool = True,
) -> tuple[ReaderBundle, Path, bool]:
    """The bundle for these inputs from the cache, else fitted and stored; returns it, its
    folder and whether it was reused."""
    inputs = {"model": model_key(model), "attributes": list(attributes), "size": size, "seed": 0}
    folder = (root or readers_cache_root()) / stage_key("readers", inputs)
    if not fresh and (folder / f"{BUNDLE_NAME}.json").is_file():
        try:
            return ReaderBundle.load(folder), folder, True
        except ProbesError as exc:  # a damaged entry is refitted, and says so
            if say:
                say(f"readers: refitting ({exc})")
    from tqdm import tqdm

    with tqdm(
        total=len(attributes), desc="fit readers", unit="attribute", disable=not progress
    ) as bar:

        def step(i: int, n: int, name: str) -> None:
            bar.n = i
            bar.set_postfix_str(name)
            bar.refresh()

        bundle = train_readers(model, attributes, size=size, on_attribute=step, progress=False)
        bar.n = len(attributes)
        bar.refresh()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        bundle.save(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return bundle, folder, False


def stage_readers(
    model: LoadedModel,
    attributes: Sequence[str],
    out: Path,
    size: int | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """``probes run``'s reader stage: the (cached) bundle, copied into ``out/readers``.

    ``size`` is the probes stage's (so its datasets are the same ones), else READER_SIZE."""

    size = size or READER_SIZE
    say(f"readers: {len(attributes)} attributes, {size} examples each")
    bundle, folder, reused = cached_readers(
        model, attributes, size=size, fresh=fresh, say=say, progress=False
    )
    target = out / "readers"
    target.mkdir(parents=True, exist_ok=True)
    for name in (f"{BUNDLE_NAME}.json", f"{BUNDLE_NAME}.safetensors"):
        shutil.copyfile(folder / name, target / name)
    if reused:
        say(f"readers: reused from the cache ({folder.name})")
    from probes.viz.export import save_figure
    from probes.viz.probing import plot_reader_curves

    for reader in bundle.readers.values():
        if reader.scores.get("by_layer"):  # bundles cached before the curves were kept lack it
            save_figure(plot_reader_curves(reader), out / "figures" / f"reader_{reader.attribute}")
    return {"folder": "readers", "frame": bundle.frame, "summary": bundle.summary()}
