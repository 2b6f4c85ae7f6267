"""Resuming at layer L: the same numbers as a whole pass, fewer blocks run, misuse refused."""

from __future__ import annotations

import pytest
import torch

from probes.behavior.scoring import continuation_logprobs, next_token_logprobs
from probes.directions import Direction
from probes.errors import ProbesError
from probes.interventions.hooks import patch, record, steer
from probes.interventions.prefix_reuse import resume_from

PROMPTS = [
    "Hello there my friend, how are you today?",
    "Hi",
    "I love the colour of autumn leaves.",
    "A somewhat longer prompt with more tokens than the rest",
]


def _direction(model, layer: int) -> Direction:
    gen = torch.Generator().manual_seed(layer)
    return Direction(torch.randn(model.d_model, generator=gen), layer=layer, typical_norm=3.0)


@pytest.mark.parametrize("layer", [1, 2])
def test_resumed_passes_give_the_same_numbers_as_whole_passes(tiny_model, layer):
    direction = _direction(tiny_model, layer)
    whole = []
    for strength in (0.5, -1.0):
        with steer(tiny_model, direction, strength):
            whole.append(next_token_logprobs(tiny_model, PROMPTS))
            whole.append(continuation_logprobs(tiny_model, PROMPTS, [" the end"] * 4))
    with resume_from(tiny_model, layer) as stats:
        resumed = []
        for strength in (0.5, -1.0):
            with steer(tiny_model, direction, strength):
                resumed.append(next_token_logprobs(tiny_model, PROMPTS))
                resumed.append(continuation_logprobs(tiny_model, PROMPTS, [" the end"] * 4))
    for a, b in zip(whole, resumed, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert stats.enabled  # both tiny architectures return plain tensors from their blocks
    # the second strength re-used every batch: the early blocks ran only the first time
    assert stats.resumed == stats.whole > 0
    assert stats.blocks_skipped == layer * stats.resumed
    assert len(tiny_model.bridge.blocks) == tiny_model.n_layers
    assert all(b is tiny_model.bridge.blocks[i] for i, b in enumerate(_blocks(tiny_model)))


def _blocks(model):
    body = model.hf_model.base_model
    return getattr(body, "layers", None) or body.h


def test_resume_is_used_on_gemma(tiny_gemma):
    with resume_from(tiny_gemma, 1) as stats:
        next_token_logprobs(tiny_gemma, PROMPTS)
        next_token_logprobs(tiny_gemma, PROMPTS)
    assert stats.enabled and stats.resumed == stats.whole == 1  # 4 prompts, one batch


def test_patch_at_the_resumed_layer_matches(tiny_gemma):
    values = record(tiny_gemma, PROMPTS[::-1], [2], site="resid_pre", positions=[-1])
    with patch(tiny_gemma, values, site="resid_pre", positions=[-1]):
        expected = next_token_logprobs(tiny_gemma, PROMPTS)
    with resume_from(tiny_gemma, 2):
        next_token_logprobs(tiny_gemma, PROMPTS)  # the whole pass that keeps the residual
        with patch(tiny_gemma, values, site="resid_pre", positions=[-1]):
            got = next_token_logprobs(tiny_gemma, PROMPTS)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_a_hook_before_the_kept_layer_makes_the_pass_start_earlier(tiny_gemma):
    early = _direction(tiny_gemma, 0)
    with steer(tiny_gemma, early, 1.0):
        expected = next_token_logprobs(tiny_gemma, PROMPTS)
    with resume_from(tiny_gemma, [1, 2]) as stats:
        next_token_logprobs(tiny_gemma, PROMPTS)  # hook-free: keeps layers 1 and 2
        with steer(tiny_gemma, early, 1.0):  # block 0 is hooked: nothing may be skipped
            got = next_token_logprobs(tiny_gemma, PROMPTS)
        with steer(tiny_gemma, _direction(tiny_gemma, 1), 1.0):  # resumes at 1, not 2
            next_token_logprobs(tiny_gemma, PROMPTS)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert (stats.whole, stats.resumed, stats.blocks_skipped) == (2, 1, 1)
    with pytest.raises(ProbesError, match="outside"), resume_from(tiny_gemma, tiny_gemma.n_layers):
        pass


def test_generation_runs_whole_inside_the_block(tiny_gemma):
    from probes.behavior.scoring import greedy_continuations

    expected = greedy_continuations(tiny_gemma, PROMPTS[:2], max_new_tokens=4)
    with resume_from(tiny_gemma, 1):
        first = greedy_continuations(tiny_gemma, PROMPTS[:2], max_new_tokens=4)
        second = greedy_continuations(tiny_gemma, PROMPTS[:2], max_new_tokens=4)
    assert first == second == expected


def _last_token_recorder(model, layers, out):
    from probes.cache.store import SITE_HOOKS

    def make(layer):
        def hook(acts, hook):
            out.setdefault(layer, []).append(acts[:, -1].clone())

        return hook

    return [(SITE_HOOKS["resid_post"].format(layer=layer), make(layer)) for layer in layers]


def test_observer_hooks_keep_residuals_and_still_fire_in_resumed_passes(tiny_gemma):
    from probes.interventions.prefix_reuse import observer

    model, every = tiny_gemma, list(range(tiny_gemma.n_layers))
    late = _direction(model, 2)
    with steer(model, late, 1.0):
        expected = next_token_logprobs(model, PROMPTS)
    seen: dict[int, list] = {}
    plain_hooks = _last_token_recorder(model, every, seen)
    with resume_from(model, [1, 2]) as stats:  # a plain recording hook at block 0: nothing kept
        with model.bridge.hooks(fwd_hooks=plain_hooks):
            next_token_logprobs(model, PROMPTS)
        with steer(model, late, 1.0):
            next_token_logprobs(model, PROMPTS)
    assert (stats.whole, stats.resumed) == (2, 0)

    seen.clear()
    watching = [(n, observer(f)) for n, f in _last_token_recorder(model, every, seen)]
    with resume_from(model, [1, 2]) as stats:
        with model.bridge.hooks(fwd_hooks=watching):  # records every layer, returns dropped
            whole = next_token_logprobs(model, PROMPTS)
        with steer(model, late, 1.0):  # resumes at 2 from the residual kept under the observers
            got = next_token_logprobs(model, PROMPTS)
        with steer(model, late, 1.0), model.bridge.hooks(fwd_hooks=watching[1:2]):
            again = next_token_logprobs(model, PROMPTS)  # an observer at block 1: starts at 1
    torch.testing.assert_close(whole, next_token_logprobs(model, PROMPTS), rtol=0, atol=1e-6)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, expected, rtol=0, atol=1e-5)
    assert (stats.whole, stats.resumed, stats.blocks_skipped) == (1, 2, 2 + 1)
    assert len(seen[1]) == 2  # the observer at block 1 fired in the resumed pass too
    torch.testing.assert_close(seen[1][1], seen[1][0], rtol=0, atol=1e-6)
    assert observer(lambda acts, hook: acts * 0)(torch.ones(2), None) is None  # return dropped
