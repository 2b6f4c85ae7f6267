"""Behaviour: answer scoring (log-odds, continuations, greedy text) and damage metrics."""

from __future__ import annotations

from probes.behavior.scoring import (
    answer_set_logprobs,
    behavior_log_odds,
    continuation_logprobs,
    greedy_continuations,
    kl_divergence,
    multiple_choice_correct,
    neutral_prompts,
    neutral_texts,
    next_token_logits_at,
    next_token_logprobs,
    next_token_logprobs_at,
    perplexity,
)

__all__ = [
    "answer_set_logprobs",
    "behavior_log_odds",
    "continuation_logprobs",
    "greedy_continuations",
    "kl_divergence",
    "multiple_choice_correct",
    "neutral_prompts",
    "neutral_texts",
    "next_token_logits_at",
    "next_token_logprobs",
    "next_token_logprobs_at",
    "perplexity",
]
