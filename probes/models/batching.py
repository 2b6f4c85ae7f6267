"""Tokenize text batches with explicit padding side, masks and mask-derived positions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """Token ids, attention mask and position ids for one padded batch."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    position_ids: Int[Tensor, "batch pos"]

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        return self.attention_mask.sum(dim=1)

    def model_kwargs(self) -> dict[str, Tensor]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }


def pad_token_id(tokenizer: Any) -> int:
    """The id used for padding (pad, else eos, else 0); it is always masked out."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def collate(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    padding_side: Literal["left", "right"] = "right",
    device: torch.device | str = "cpu",
) -> Batch:
    """Pad token id lists into a batch; position ids count real tokens only."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        span = slice(width - n, width) if padding_side == "left" else slice(0, n)
        ids[row, span] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(ids.to(device), mask.to(device), positions.to(device))


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, with the tokenizer's own special tokens (BOS for Gemma).

    A text that is not valid Unicode (a lone surrogate) is a one-line ProbesError."""
    from probes.validate import check_text

    for i, text in enumerate(texts):
        check_text(text, f"text {i}")
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first) to cut padding."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


# Which prompts (indices into the caller's list) the rows of the current batch are. Functions
# that batch prompts set it around each forward, so per-prompt interventions (patching) find
# their rows whatever the batching order.
_BATCH_ROWS: ContextVar[Tensor | None] = ContextVar("probes_batch_rows", default=None)


@contextmanager
def batch_rows(rows: Sequence[int]) -> Iterator[None]:
    """Declare that the forward passes inside run the prompts ``rows``, in batch order."""
    token = _BATCH_ROWS.set(torch.as_tensor(list(rows), dtype=torch.long))
    try:
        yield
    finally:
        _BATCH_ROWS.reset(token)


def current_rows(batch: int) -> Tensor:
    """The prompt indices of the current batch's rows (``0..batch-1`` if nobody declared them)."""
    rows = _BATCH_ROWS.get()
    return torch.arange(batch) if rows is None else rows


# Real-token lengths of the prompts in the current batch when the forward also carries a
# continuation (scoring "prompt + answer" in one pass): interventions then keep counting
# positions from the prompt's end, not from the end of the answer.
_PROMPT_LENGTHS: ContextVar[Tensor | None] = ContextVar("probes_prompt_lengths", default=None)


@contextmanager
def prompt_lengths(lengths: Sequence[int]) -> Iterator[None]:
    """Declare how many leading real tokens of each batch row are the prompt."""
    token = _PROMPT_LENGTHS.set(torch.as_tensor(list(lengths), dtype=torch.long))
    try:
        yield
    finally:
        _PROMPT_LENGTHS.reset(token)


def declared_prompt_lengths() -> Tensor | None:
    """The lengths declared by :func:`prompt_lengths`, if any."""
    return _PROMPT_LENGTHS.get()
