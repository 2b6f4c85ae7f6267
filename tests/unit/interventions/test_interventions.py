"""Interventions on tiny random-weight models: hooks clean up, scopes touch exactly what they
name during cached generation, ablation leaves activations orthogonal, LEACE leaves a probe at
chance, patching restores the source run, steering moves the metric it claims to move."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from probes.behavior.scoring import (
    kl_divergence,
    next_token_logprobs,
    next_token_logprobs_at,
    perplexity,
)
from probes.cache.store import write_store
from probes.directions import Direction, fit_eraser
from probes.errors import ProbesError
from probes.interventions.hooks import ablate, erase, patch, record, steer
from probes.models.batching import collate, encode

PROMPTS = [
    "Hello there my friend, how are you today?",
    "Hi",
    "I love the colour of autumn leaves.",
    "A somewhat longer prompt with more tokens than the rest",
]


def _no_hooks_left(model) -> bool:
    points = model.bridge.hook_dict.values()
    body = model.hf_model.base_model
    return all(not p.fwd_hooks for p in points) and not body._forward_pre_hooks


def _direction(model, layer: int, seed: int = 0, norm: float = 1.0) -> Direction:
    gen = torch.Generator().manual_seed(seed)
    return Direction(torch.randn(model.d_model, generator=gen), layer=layer, typical_norm=norm)


def _last_logprobs(model, prompts):
    return next_token_logprobs(model, prompts)


def test_hooks_removed_after_context_and_after_exception(tiny_model):
    before = _last_logprobs(tiny_model, PROMPTS)
    direction = _direction(tiny_model, 1)
    with steer(tiny_model, direction, 4.0), ablate(tiny_model, direction.reversed()):
        assert not _no_hooks_left(tiny_model)
    assert _no_hooks_left(tiny_model)
    with pytest.raises(RuntimeError, match="boom"), steer(tiny_model, direction, 4.0):
        raise RuntimeError("boom")
    assert _no_hooks_left(tiny_model)
    torch.testing.assert_close(_last_logprobs(tiny_model, PROMPTS), before)


def _observe_generation(model, scope, positions=None):
    """Per generation step, which (row, query position) the steer hook changed."""
    layer = 1
    name = f"blocks.{layer}.hook_out"
    seen_in, changed = [], []

    def before(acts, hook):
        seen_in.append(acts.detach().clone())

    def after(acts, hook):
        changed.append((acts - seen_in[len(changed)]).abs().sum(-1) > 0)

    ids = [encode(model.tokenizer, [p])[0] for p in ("Hello there my friend", "Hi you")]
    batch = collate(ids, 0, "left")
    direction = _direction(model, layer)
    with (
        model.bridge.hooks(fwd_hooks=[(name, before)]),
        steer(model, direction, 3.0, scope=scope, positions=positions),
        model.bridge.hooks(fwd_hooks=[(name, after)]),
    ):
        model.hf_model.generate(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
        )
    return changed, batch.attention_mask.bool()


@pytest.mark.parametrize("scope", ["prompt", "generation", "all"])
def test_scopes_touch_exactly_their_positions_in_cached_generation(tiny_gemma, scope):
    changed, mask = _observe_generation(tiny_gemma, scope)
    prompt_step, generation_steps = changed[0], changed[1:]
    assert len(generation_steps) == 3 and all(s.shape[1] == 1 for s in generation_steps)
    if scope in ("prompt", "all"):
        assert torch.equal(prompt_step, mask)  # every real prompt token, never padding
    else:
        assert not prompt_step.any()
    for step in generation_steps:
        assert bool(step.all()) == (scope in ("generation", "all"))
        assert bool(step.any()) == (scope in ("generation", "all"))


def test_position_indexed_hook_does_not_misfire_on_one_token_steps(tiny_gemma):
    changed, mask = _observe_generation(tiny_gemma, "all", positions=[-1])
    lengths = mask.sum(1)
    expected = torch.zeros_like(mask)
    expected[:, -1] = True  # left padding: the last prompt token is the last column
    assert torch.equal(changed[0], expected)
    assert lengths.tolist()[0] != lengths.tolist()[1]
    assert not any(step.any() for step in changed[1:])


def test_ablation_leaves_activation_orthogonal(tiny_model):
    d1, d2 = _direction(tiny_model, 1, seed=1), _direction(tiny_model, 1, seed=2)
    with ablate(tiny_model, [d1, d2]):
        acts = record(tiny_model, PROMPTS, [1], positions=None)[1]
    base = record(tiny_model, PROMPTS, [1], positions=None)[1]
    assert base.abs().sum() > 0
    for d in (d1, d2):
        assert (acts @ d.unit).abs().max() < 1e-4
        assert (base @ d.unit).abs().max() > 1e-2


def test_ablate_prompt_scope_by_positions(tiny_gemma):
    d = _direction(tiny_gemma, 2, seed=3)
    with ablate(tiny_gemma, d, positions=[-1]):
        acts = record(tiny_gemma, PROMPTS, [2], positions=[-1, -2])[2]
    assert (acts[:, 0] @ d.unit).abs().max() < 1e-4
    assert (acts[:, 1] @ d.unit).abs().min() > 1e-6


def _labelled_store(model, tmp_path, layer: int):
    texts, labels = [], []
    colours = ["red", "blue", "green", "grey", "pink", "gold", "teal", "plum"]
    things = ["car", "door", "coat", "bag", "cup", "kite", "hat", "bike"]
    for i, colour in enumerate(colours):
        for thing in things:
            texts.append(f"My {thing} is {colour}, I think.")
            labels.append("warm" if i % 2 == 0 else "cool")
    acts = record(model, texts, [layer], positions=[-4])[layer][:, 0]
    table = [
        {"label": lab, "text": t, "attribute": "tone"} for t, lab in zip(texts, labels, strict=True)
    ]
    store = write_store(tmp_path / "store", {"resid_post": acts[:, None]}, table, layers=[layer])
    return store, texts, np.asarray(labels)


def test_leace_puts_a_probe_at_chance(tiny_gemma, tmp_path):
    layer = 2
    store, texts, labels = _labelled_store(tiny_gemma, tmp_path, layer)
    x = store.get(layer).numpy()
    before = LogisticRegression(max_iter=2000).fit(x, labels).score(x, labels)
    assert before > 0.9
    eraser = fit_eraser(store, layer)
    with erase(tiny_gemma, eraser):
        erased = record(tiny_gemma, texts, [layer], positions=[-4])[layer][:, 0].numpy()
    after = LogisticRegression(max_iter=2000).fit(erased, labels).score(erased, labels)
    assert after <= 0.6, (before, after)
    eraser.save(tmp_path / "eraser")
    torch.testing.assert_close(type(eraser).load(tmp_path / "eraser").proj_left, eraser.proj_left)


def test_patching_whole_residual_reproduces_the_source_run(tiny_model):
    sources = ["I love the colour of autumn", "We visit the zoo on Sundays"]
    targets = ["I like the colour of autumn", "We visit the pub on Mondays"]
    ids = [encode(tiny_model.tokenizer, [s])[0] for s in sources + targets]
    assert len({len(i) for i in ids}) == 1  # equal lengths: every position aligns
    values = record(tiny_model, sources, [0], site="resid_pre", positions=None)
    with patch(tiny_model, values, site="resid_pre", positions=None):
        patched = next_token_logprobs(tiny_model, targets)
    torch.testing.assert_close(patched, next_token_logprobs(tiny_model, sources))


def test_patch_rows_follow_prompts_whatever_the_batch_order(tiny_model):
    last = tiny_model.n_layers - 1
    sources, targets = PROMPTS, PROMPTS[::-1]
    values = record(tiny_model, sources, [last], positions=[-1], batch_size=3)
    with patch(tiny_model, values, positions=[-1]):
        patched = next_token_logprobs(tiny_model, targets, batch_size=3)
    torch.testing.assert_close(patched, next_token_logprobs(tiny_model, sources), atol=1e-4, rtol=0)


def test_patch_within_a_subspace_changes_only_that_component(tiny_gemma):
    d = _direction(tiny_gemma, 1, seed=5)
    values = record(tiny_gemma, PROMPTS, [1], positions=[-1])
    target = PROMPTS[1:] + PROMPTS[:1]
    base = record(tiny_gemma, target, [1], positions=[-1])[1][:, 0]
    with patch(tiny_gemma, values, positions=[-1], basis=d.vector[None]):
        got = record(tiny_gemma, target, [1], positions=[-1])[1][:, 0]
    u = d.unit
    torch.testing.assert_close(got @ u, values[1][:, 0] @ u, atol=1e-4, rtol=0)
    rest = lambda x: x - (x @ u)[:, None] * u  # noqa: E731
    torch.testing.assert_close(rest(got), rest(base), atol=1e-4, rtol=0)


def test_steering_along_a_token_unembedding_raises_its_probability(tiny_gemma):
    token = tiny_gemma.tokenizer(" z", add_special_tokens=False)["input_ids"][-1]
    w_u = tiny_gemma.hf_model.get_output_embeddings().weight[token].detach()
    last = tiny_gemma.n_layers - 1
    toward = Direction(w_u, layer=last, typical_norm=10.0)
    ids = [[token]] * len(PROMPTS)
    levels = []
    for strength in (0.0, 2.0, 5.0, 10.0):
        with steer(tiny_gemma, toward, strength, positions=[-1]):
            levels.append(float(torch.cat(next_token_logprobs_at(tiny_gemma, PROMPTS, ids)).mean()))
    assert levels == sorted(levels) and levels[-1] - levels[0] > 1.0
    random = Direction(torch.randn(tiny_gemma.d_model), layer=last, typical_norm=10.0)
    with steer(tiny_gemma, random, 10.0, positions=[-1]):
        moved = float(torch.cat(next_token_logprobs_at(tiny_gemma, PROMPTS, ids)).mean())
    assert abs(moved - levels[0]) < (levels[-1] - levels[0])


def test_interventions_compose_in_entry_order(tiny_gemma):
    d = _direction(tiny_gemma, 1, seed=7)
    with ablate(tiny_gemma, d):
        ablated = record(tiny_gemma, PROMPTS, [1], positions=None)[1]
    with steer(tiny_gemma, d, 5.0), ablate(tiny_gemma, d):
        both = record(tiny_gemma, PROMPTS, [1], positions=None)[1]
    torch.testing.assert_close(both, ablated, atol=1e-4, rtol=0)


def test_damage_metrics_are_zero_without_intervention_and_grow_with_it(tiny_gemma):
    prompts = ["The moon goes round the", "Water boils at a lower"]
    ref = next_token_logprobs(tiny_gemma, prompts)
    assert kl_divergence(ref, next_token_logprobs(tiny_gemma, prompts)).abs().max() < 1e-6
    with steer(tiny_gemma, _direction(tiny_gemma, 1), 20.0):
        kl = kl_divergence(ref, next_token_logprobs(tiny_gemma, prompts))
        ppl_steered = perplexity(tiny_gemma, prompts)
    assert float(kl.min()) > 1e-3
    assert ppl_steered != perplexity(tiny_gemma, prompts)


def test_bad_arguments_are_one_line_errors(tiny_gemma):
    d = _direction(tiny_gemma, 1)
    with pytest.raises(ProbesError, match="scope"), steer(tiny_gemma, d, 1.0, scope="bad"):  # type: ignore[arg-type]
        pass
    far = Direction(d.vector, layer=99)
    with pytest.raises(ProbesError, match="out of range"), steer(tiny_gemma, far, 1.0):
        pass
    assert _no_hooks_left(tiny_gemma)


def test_prompt_coordinates_ignore_a_scored_continuation(tiny_gemma):
    """Scoring "prompt + answer" in one pass: position -1 is still the prompt's last token."""
    from probes.behavior.scoring import continuation_logprobs

    name = "blocks.1.hook_out"
    seen, changed = [], []

    def before(acts, hook):
        seen.append(acts.detach().clone())

    def after(acts, hook):
        changed.append((acts - seen[len(changed)]).abs().sum(-1) > 0)

    prompts = ["Hello there", "Hi"]
    answers = [" friend", " you all"]
    with (
        tiny_gemma.bridge.hooks(fwd_hooks=[(name, before)]),
        steer(tiny_gemma, _direction(tiny_gemma, 1), 3.0, positions=[-1]),
        tiny_gemma.bridge.hooks(fwd_hooks=[(name, after)]),
    ):
        continuation_logprobs(tiny_gemma, prompts, answers, batch_size=1)
    ids = [encode(tiny_gemma.tokenizer, [p])[0] for p in prompts]
    for hit, prompt_ids in zip(changed, sorted(ids, key=len, reverse=True), strict=True):
        assert hit.nonzero()[:, 1].tolist() == [len(prompt_ids) - 1]
