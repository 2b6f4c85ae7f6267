"""Activation patching over counterfactual twins: for each layer and token group, the fraction
of the cue's effect on the answer metric restored by writing the twin's residual into the run.

Twins share everything but the cue, so for pairs with equal token length every position
aligns. Columns are token groups: the tokens where the twins differ (the cue), the other
tokens of the user's text, and each of the last few tokens of the answer prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probes.behavior.twins import twin_pairs
from probes.datasets import RenderSpec, render_behavior
from probes.errors import ProbesError
from probes.interventions.hooks import patch, record
from probes.interventions.prefix_reuse import resume_from
from probes.interventions.steering import Metric, log_odds_metric
from probes.models.batching import encode
from probes.models.loading import LoadedModel


@dataclass
class PatchingResult:
    """``restored[layer_row, column]`` = mean(Y_patched - Y_base) / mean(Y_source - Y_base)."""

    layers: list[int]
    site: str
    columns: list[str]
    restored: np.ndarray
    total_effect: float
    n_pairs: int
    base_cue: str
    source_cue: str
    skipped_pairs: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "site": self.site,
            "columns": self.columns,
            "restored": self.restored.round(4).tolist(),
            "total_effect": self.total_effect,
            "n_pairs": self.n_pairs,
            "base_cue": self.base_cue,
            "source_cue": self.source_cue,
            "skipped_pairs_unequal_length": self.skipped_pairs,
        }


def _token_groups(base_ids: list[int], source_ids: list[int], last_k: int) -> dict[str, list[int]]:
    n = len(base_ids)
    body = range(1, n - last_k)  # BOS is shared by construction
    groups = {
        "cue tokens": [i for i in body if base_ids[i] != source_ids[i]],
        "rest of user text": [i for i in body if base_ids[i] == source_ids[i]],
    }
    for k in range(last_k, 0, -1):
        groups["last token" if k == 1 else f"token -{k}"] = [n - k]
    return groups


@torch.inference_mode()
def patching_heatmap(
    model: LoadedModel,
    items: Sequence[Any],
    base_cue: str,
    source_cue: str,
    *,
    layers: Sequence[int] | None = None,
    site: str = "resid_pre",
    last_k: int = 4,
    metric: Metric = log_odds_metric,
    spec: RenderSpec | None = None,
    progress: bool = True,
) -> PatchingResult:
    """Patch the source twin's residual into the base twin at each (layer, token group)."""
    spec = spec or RenderSpec()
    all_pairs = twin_pairs(items, base_cue, source_cue)
    base_items = [b for b, _ in all_pairs]
    source_items = [s for _, s in all_pairs]
    base_ids = encode(model.tokenizer, render_behavior(base_items, spec, tokenizer=model.tokenizer))
    source_ids = encode(
        model.tokenizer, render_behavior(source_items, spec, tokenizer=model.tokenizer)
    )
    keep = [
        i for i, (b, s) in enumerate(zip(base_ids, source_ids, strict=True)) if len(b) == len(s)
    ]
    if len(keep) < 2:
        raise ProbesError("patching needs at least 2 twin pairs whose prompts have equal length")
    base_items = [base_items[i] for i in keep]
    source_items = [source_items[i] for i in keep]
    base_ids = [base_ids[i] for i in keep]
    source_ids = [source_ids[i] for i in keep]
    layers = list(range(model.n_layers)) if layers is None else [int(x) for x in layers]

    y_base = metric(model, base_items).numpy()
    y_source = metric(model, source_items).numpy()
    total = float((y_source - y_base).mean())
    if abs(total) < 1e-6:
        raise ProbesError("the cue has no effect on the metric: nothing to restore")
    groups = [_token_groups(b, s, last_k) for b, s in zip(base_ids, source_ids, strict=True)]
    columns = list(groups[0])
    longest = max(len(b) for b in base_ids)
    masks = {}
    for column in columns:
        mask = torch.zeros(len(base_ids), longest, dtype=torch.bool)
        for row, group in enumerate(groups):
            mask[row, group[column]] = True
        masks[column] = mask

    source_prompts = render_behavior(source_items, spec, tokenizer=model.tokenizer)
    values = record(model, source_prompts, layers, site=site, positions=None)
    restored = np.full((len(layers), len(columns)), np.nan)
    cells = [(i, j) for i in range(len(layers)) for j in range(len(columns))]
    bar = tqdm(total=len(cells), desc="activation patching", disable=not progress)
    # a patch at a layer leaves the earlier ones alone: the first pass keeps the residual
    # entering each patched layer, and each later pass starts from the latest one it may
    with resume_from(model, layers):
        for i, layer in enumerate(layers):
            for j, column in enumerate(columns):
                bar.update()
                if not masks[column].any():
                    continue
                one = {layer: values[layer]}
                with patch(model, one, site=site, positions=None, token_mask=masks[column]):
                    y = metric(model, base_items).numpy()
                restored[i, j] = float((y - y_base).mean()) / total
    bar.close()
    return PatchingResult(
        layers=layers,
        site=site,
        columns=columns,
        restored=restored,
        total_effect=total,
        n_pairs=len(keep),
        base_cue=base_cue,
        source_cue=source_cue,
        skipped_pairs=len(all_pairs) - len(keep),
    )
