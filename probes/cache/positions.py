"""Which token positions to read activations at, always derived from the attention mask.

"last" is the last real token whatever the padding side; "mean" averages the real tokens after
the BOS token (BOS is an attention sink with an outsized norm); "suffix" appends a read-out
suffix such as " I think the age of this user is" and reads its last token (TalkTuner's reading
probe); "index" reads one explicit real-token index per prompt (negative counts from the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from probes.datasets.render import attach
from probes.errors import ProbesError

PositionKind = Literal["last", "mean", "suffix", "index"]


@dataclass(frozen=True)
class PositionSpec:
    """Where to read: one of the four kinds, plus the suffix text or explicit indices."""

    kind: PositionKind = "last"
    suffix: str | None = None
    indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("last", "mean", "suffix", "index"):
            raise ProbesError(f"unknown position {self.kind!r}: use last, mean, suffix or index")
        if self.kind == "suffix" and not self.suffix:
            raise ProbesError("position 'suffix' needs the read-out suffix text")
        if self.kind == "index" and self.indices is None:
            raise ProbesError("position 'index' needs one token index per prompt")

    def key(self) -> dict[str, object]:
        """JSON-able description for manifests and cache keys."""
        out: dict[str, object] = {"kind": self.kind}
        if self.suffix is not None:
            out["suffix"] = self.suffix
        if self.indices is not None:
            out["indices"] = list(self.indices)
        return out

    def apply_to_texts(self, texts: Sequence[str]) -> list[str]:
        """The strings actually tokenized: the suffix kind appends its suffix."""
        if self.kind == "suffix":
            return [attach(t, str(self.suffix)) for t in texts]
        return list(texts)


def parse_position(value: str | PositionSpec, suffix: str | None = None) -> PositionSpec:
    """Accept 'last', 'mean', 'suffix' (with ``suffix``) or a PositionSpec."""
    if isinstance(value, PositionSpec):
        return value
    if value == "suffix":
        return PositionSpec("suffix", suffix=suffix)
    if value in ("last", "mean"):
        return PositionSpec(value)  # type: ignore[arg-type]
    raise ProbesError(f"unknown position {value!r}: use last, mean or suffix")


def real_token_index(
    attention_mask: Int[Tensor, "batch pos"], nth: Int[Tensor, " batch"]
) -> Int[Tensor, " batch"]:
    """Column of each row's ``nth`` real token (negative counts from the last real token)."""
    lengths = attention_mask.sum(dim=1)
    nth = torch.where(nth < 0, lengths + nth, nth)
    if bool(((nth < 0) | (nth >= lengths)).any()):
        raise ProbesError("a token index lies outside its prompt's real tokens")
    first = attention_mask.long().argmax(dim=1)  # first real column (left padding shifts it)
    return first + nth


def selection_weights(
    spec: PositionSpec,
    attention_mask: Int[Tensor, "batch pos"],
    skip_first: Int[Tensor, " batch"],
    rows: Sequence[int] | None = None,
) -> Int[Tensor, " batch"] | Float[Tensor, "batch pos"]:
    """Column index per row (last/suffix/index) or averaging weights (mean) for a batch.

    ``skip_first`` is 1 for rows whose first real token is a BOS to leave out of the mean.
    ``rows`` maps batch rows to prompt numbers, for explicit per-prompt indices.
    """
    batch = attention_mask.shape[0]
    device = attention_mask.device
    if spec.kind in ("last", "suffix"):
        return real_token_index(attention_mask, torch.full((batch,), -1, device=device))
    if spec.kind == "index":
        assert spec.indices is not None and rows is not None
        nth = torch.as_tensor([spec.indices[r] for r in rows], device=device)
        return real_token_index(attention_mask, nth)
    weights = attention_mask.float().clone()
    first = attention_mask.long().argmax(dim=1)
    has_more = attention_mask.sum(dim=1) > skip_first
    drop = skip_first.bool() & has_more
    weights[torch.arange(batch, device=device)[drop], first[drop]] = 0.0
    return weights / weights.sum(dim=1, keepdim=True)


def gather_positions(
    acts: Float[Tensor, "batch pos d_model"],
    selection: Int[Tensor, " batch"] | Float[Tensor, "batch pos"],
) -> Float[Tensor, "batch d_model"]:
    """Read the selected position (or the weighted mean) of each row."""
    if selection.dtype.is_floating_point:
        return torch.einsum("bp,bpd->bd", selection.to(acts.dtype), acts)
    return acts[torch.arange(acts.shape[0], device=acts.device), selection]
