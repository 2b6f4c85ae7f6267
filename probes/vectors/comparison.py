"""The suite's steering against llama.cpp's control vector on the same behaviour items: does the
exported file move the answer log-odds the way ``steer`` does, in the engine people deploy?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probes.behavior.scoring import behavior_log_odds
from probes.directions import Direction
from probes.errors import ProbesError
from probes.interventions.hooks import steer
from probes.interventions.steering import flip_rate
from probes.models.loading import LoadedModel
from probes.vectors.llamacpp import LlamaCppModel, control_buffer


@dataclass
class EngineComparison:
    """Per-item answer log-odds (positive minus negative set) with and without the edit, in the
    suite (de-quantized float model, ``steer``) and in llama.cpp (quantized GGUF, the file)."""

    attribute: str
    layers: list[int]
    strength: float
    scale: float
    suite_base: np.ndarray
    suite_steered: np.ndarray
    engine_base: np.ndarray
    engine_steered: np.ndarray

    @property
    def sign(self) -> int:
        return 1 if self.strength * self.scale > 0 else -1

    @property
    def suite_shift(self) -> np.ndarray:
        return self.suite_steered - self.suite_base

    @property
    def engine_shift(self) -> np.ndarray:
        return self.engine_steered - self.engine_base

    def summary(self) -> dict[str, Any]:
        """Agreement of the two shifts, each side's flip rate and the gap without the vector."""
        same = np.sign(self.suite_shift) == np.sign(self.engine_shift)
        suite_flip, suite_n = flip_rate(self.suite_base, self.suite_steered, self.sign)
        engine_flip, engine_n = flip_rate(self.engine_base, self.engine_steered, self.sign)
        gap = self.engine_base - self.suite_base
        return {
            "n_items": len(self.suite_base),
            "same_direction": float(same.mean()),
            "shift_correlation": float(np.corrcoef(self.suite_shift, self.engine_shift)[0, 1]),
            "suite_mean_shift": float(self.suite_shift.mean()),
            "engine_mean_shift": float(self.engine_shift.mean()),
            "suite_flip_rate": suite_flip,
            "suite_flip_eligible": suite_n,
            "engine_flip_rate": engine_flip,
            "engine_flip_eligible": engine_n,
            "base_gap_mean_abs": float(np.abs(gap).mean()),
            "base_gap_max_abs": float(np.abs(gap).max()),
            "base_correlation": float(np.corrcoef(self.suite_base, self.engine_base)[0, 1]),
            "base_sign_agreement": float(
                (np.sign(self.suite_base) == np.sign(self.engine_base)).mean()
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "layers": self.layers,
            "strength": self.strength,
            "scale": self.scale,
            "summary": self.summary(),
            "suite_base": self.suite_base.tolist(),
            "suite_steered": self.suite_steered.tolist(),
            "engine_base": self.engine_base.tolist(),
            "engine_steered": self.engine_steered.tolist(),
        }


def engine_log_odds(
    engine: LlamaCppModel,
    model: LoadedModel,
    items: Sequence[Any],
    control: np.ndarray | None = None,
) -> np.ndarray:
    """The items' answer-set log-odds in llama.cpp, on the suite tokenizer's token ids (the
    GGUF carries the same vocabulary), so both sides score exactly the same tokens."""
    from probes.datasets import RenderSpec, render_behavior
    from probes.models.batching import encode

    tok = model.tokenizer
    prompts = encode(tok, render_behavior(items, RenderSpec(), tokenizer=tok))
    logprobs = engine.last_logprobs(prompts, control)
    out = np.empty(len(items))
    for i, (item, lp) in enumerate(zip(items, logprobs, strict=True)):
        sides = []
        for key in (item.positive, item.negative):
            ids = [tok(a, add_special_tokens=False)["input_ids"] for a in item.answers[key]]
            if any(len(piece) != 1 for piece in ids):
                raise ProbesError(f"item {item.id}: the engine comparison scores 1-token answers")
            values = lp[[piece[0] for piece in ids]]
            sides.append(values.max() + np.log(np.exp(values - values.max()).sum()))
        out[i] = sides[0] - sides[1]
    return out


def base_log_odds(
    model: LoadedModel, engine: LlamaCppModel, items: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray]:
    """The unsteered log-odds in the suite and in llama.cpp."""
    return behavior_log_odds(model, items).numpy(), engine_log_odds(engine, model, items)


def compare_engines(
    model: LoadedModel,
    directions: Sequence[Direction],
    strength: float,
    items: Sequence[Any],
    engine: LlamaCppModel,
    vector_file: str | Path,
    *,
    scale: float = 1.0,
    bases: tuple[np.ndarray, np.ndarray] | None = None,
) -> EngineComparison:
    """``steer(model, directions, scale x strength)`` in the suite against
    ``--control-vector-scaled vector_file scale`` in llama.cpp, item by item. ``bases``: the
    unsteered (suite, engine) log-odds from :func:`base_log_odds`, to reuse across edits."""
    if engine.n_embd != model.d_model or engine.n_layer != model.n_layers:
        raise ProbesError(
            f"the GGUF model ({engine.n_layer} layers, {engine.n_embd} wide) is not "
            f"{model.name} ({model.n_layers} layers, {model.d_model} wide)"
        )
    suite_base, engine_base = bases if bases is not None else base_log_odds(model, engine, items)
    with steer(model, list(directions), scale * strength):
        suite_steered = behavior_log_odds(model, items).numpy()
    control = control_buffer(vector_file, scale, engine.n_embd, engine.n_layer)
    return EngineComparison(
        attribute=directions[0].attribute,
        layers=[d.layer for d in directions],
        strength=float(strength),
        scale=float(scale),
        suite_base=suite_base,
        suite_steered=suite_steered,
        engine_base=engine_base,
        engine_steered=engine_log_odds(engine, model, items, control),
    )
