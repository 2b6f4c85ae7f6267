"""Real inputs the fuzz cases corrupt: tiny-model stores, a saved direction, a model folder."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any


@dataclass
class Assets:
    """Built once per session under ``root``; cases copy what they edit into their own folder."""

    root: Path
    _built: dict[str, Path] = field(default_factory=dict)

    @cached_property
    def gemma(self) -> Any:
        from probes.models.loading import load_model

        return load_model("tiny-gemma3", device="cpu")

    @cached_property
    def gpt2(self) -> Any:
        from probes.models.loading import load_model

        return load_model("tiny-gpt2", device="cpu")

    def _store(self, key: str, model: Any, dataset: str, size: int) -> Path:
        if key not in self._built:
            from probes.cache.extraction import extract_dataset
            from probes.datasets import load_dataset

            root = self.root / key
            store = extract_dataset(
                model, load_dataset(dataset, size=size), cache_root=root, progress=False
            )
            self._built[key] = store.path
        return self._built[key]

    @property
    def store(self) -> Path:
        """A finished tiny-gemma3 store of 24 dialect rows (all layers, last token)."""
        return self._store("store_gemma", self.gemma, "dialect_us_uk", 24)

    @property
    def store_gpt2(self) -> Path:
        """The same dataset extracted by tiny-gpt2 (also d_model 64, three layers)."""
        return self._store("store_gpt2", self.gpt2, "dialect_us_uk", 24)

    @property
    def store_age(self) -> Path:
        """Another attribute, same model."""
        return self._store("store_age", self.gemma, "age", 24)

    @property
    def direction(self) -> Path:
        """A tiny-gemma3 mean-difference direction at layer 1 (stem of .json/.safetensors)."""
        if "direction" not in self._built:
            from probes.cache.store import ActivationStore
            from probes.directions import fit_direction

            store = ActivationStore.open(self.store)
            labels = sorted(set(store.labels))
            direction = fit_direction(store, 1, "mean_diff", labels[0], labels[1])
            stem = self.root / "direction"
            direction.save(stem)
            self._built["direction"] = stem
        return self._built["direction"]

    @property
    def model_dir(self) -> Path:
        """tiny-gpt2 saved as an ordinary Hugging Face folder (safetensors)."""
        if "model_dir" not in self._built:
            from probes.models.tiny import build_tiny_model

            model, tokenizer, _ = build_tiny_model("tiny-gpt2")
            folder = self.root / "tiny-gpt2-folder"
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            self._built["model_dir"] = folder
        return self._built["model_dir"]

    def build_all(self) -> None:
        """Every asset, so that none is built while a case is watched."""
        for name in ("store", "store_gpt2", "store_age", "direction", "model_dir"):
            getattr(self, name)


def copy_store(src: Path, dst: Path) -> Path:
    """A private copy of a store folder to corrupt."""
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, edit: Any) -> None:
    """Load, change with ``edit(obj)``, write back (the way a hand edit would)."""
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj, indent=2))
