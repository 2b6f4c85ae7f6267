"""Greedy generation on the embedded model with the KV cache on: the text the README quotes,
batched like the pipeline batches it, and readable under steering (the checks that would have
caught transformers 5.24's renamed cache keyword)."""

from __future__ import annotations

import itertools

import pytest

from probes.behavior.scoring import greedy_continuations
from probes.cache.extraction import extract_dataset
from probes.datasets import load_dataset
from probes.directions import fit_direction
from probes.doctor import UK_CONTINUATION, UK_PROMPT
from probes.interventions.steering import sample_generations

pytestmark = pytest.mark.integration

US_PROMPT = "I love the color of fall leaves. My favorite football team is"
SAMPLE_PROMPTS = [
    "My neighbour asked me what I would cook for dinner tonight, and I said",
    "The best thing about the weekend is",
    "When I was a child my favourite game was",
]


def _longest_repeat(tokens: list[int]) -> int:
    best = run = 1 if tokens else 0
    for a, b in itertools.pairwise(tokens):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best


def test_cached_greedy_continuation_of_the_uk_prompt(gemma):
    ids = gemma.tokenizer([UK_PROMPT], return_tensors="pt")
    out = gemma.hf_model.generate(**ids, max_new_tokens=8, do_sample=False, use_cache=True)
    text = gemma.tokenizer.decode(out[0, ids.input_ids.shape[1] :])
    assert text.startswith(UK_CONTINUATION), text


def test_batched_left_padded_generation_matches_lone_prompts(gemma):
    batched = greedy_continuations(gemma, [UK_PROMPT, US_PROMPT, "Hi"], max_new_tokens=6)
    alone = [greedy_continuations(gemma, [p], max_new_tokens=6)[0] for p in (UK_PROMPT, US_PROMPT)]
    assert batched[:2] == alone
    assert batched[0].startswith(UK_CONTINUATION)
    assert batched[1] != batched[0]  # the US prompt gets another team


def test_steered_greedy_samples_are_text(gemma):
    store = extract_dataset(
        gemma, load_dataset("dialect_us_uk", size=120, seed=0), layers=[14], progress=False
    )
    direction = fit_direction(store, 14, "mean_diff", "us", "uk")
    rows = sample_generations(gemma, direction, SAMPLE_PROMPTS, [0.2], max_new_tokens=16)
    assert len(rows) == len(SAMPLE_PROMPTS)
    for row in rows:
        tokens = gemma.tokenizer(row["continuation"], add_special_tokens=False).input_ids
        assert len(tokens) >= 4, row
        assert _longest_repeat(tokens) < 5, row
        assert sum(ch.isalpha() for ch in row["continuation"]) >= 8, row
