from __future__ import annotations

import torch

from probes.behavior.scoring import continuation_logprobs
from probes.models.batching import collate, length_sorted_batches


def test_collate_left_and_right_padding_positions_count_real_tokens():
    seqs = [[5, 6, 7], [8]]
    right = collate(seqs, pad_id=0, padding_side="right")
    left = collate(seqs, pad_id=0, padding_side="left")
    assert right.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert left.input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left.position_ids[1, -1].item() == 0 and right.position_ids[1, 0].item() == 0
    assert left.lengths.tolist() == [3, 1]


def test_length_sorted_batches_cover_every_index_once():
    lengths = [3, 9, 1, 7, 7, 2]
    batches = list(length_sorted_batches(lengths, batch_size=4))
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert [lengths[i] for i in batches[0]] == [9, 7, 7, 3]


def test_continuation_logprobs_match_unpadded_full_forward(tiny_model):
    prompts = ["Hello there", "Hi", "A much longer prompt than the others"]
    conts = [" friend", " you all", "!"]
    got = continuation_logprobs(tiny_model, prompts, conts, batch_size=3)
    tok = tiny_model.tokenizer
    for i, (p, c) in enumerate(zip(prompts, conts, strict=True)):
        ids = tok(p).input_ids
        cont = tok(c, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = tiny_model.hf_model(torch.tensor([ids + cont])).logits
        lp = torch.log_softmax(logits.double(), -1)[0]
        ref = sum(lp[len(ids) - 1 + k, t].item() for k, t in enumerate(cont))
        assert abs(got[i].item() - ref) < 1e-4


def test_answer_set_logprobs_mix_single_and_multi_token_answers(tiny_gemma):
    from probes.behavior.scoring import answer_set_logprobs, behavior_log_odds
    from probes.datasets import BehaviorItem

    prompts = ["The capital is", "My team is"]
    sets = [((" P", " Paris"), (" L",)), ((" A",), (" B", " Bears"))]
    got = answer_set_logprobs(tiny_gemma, prompts, sets)
    assert got.shape == (2, 2)
    for i, prompt_sets in enumerate(sets):
        for s, answers in enumerate(prompt_sets):
            each = continuation_logprobs(tiny_gemma, [prompts[i]] * len(answers), list(answers))
            assert abs(got[i, s].item() - torch.logsumexp(each, 0).item()) < 1e-4
    item = BehaviorItem(
        "x", "a", "The capital", "c", "is", {"yes": (" P",), "no": (" L",)}, "yes", "no"
    )
    odds = behavior_log_odds(tiny_gemma, [item])
    ref = continuation_logprobs(tiny_gemma, ["The capital is"] * 2, [" P", " L"])
    assert abs(odds.item() - (ref[0] - ref[1]).item()) < 1e-4


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    import os

    from probes.atomic import atomic_write_json, atomic_write_text

    path = atomic_write_text(tmp_path / "a" / "f.txt", "one")
    atomic_write_json(path, {"two": 2})
    assert path.read_text().strip().startswith("{")
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]  # no temporary left behind


def test_batched_greedy_continuations_match_one_prompt_at_a_time(tiny_model):
    from probes.behavior.scoring import greedy_continuations

    prompts = ["Hello there, my", "The weather in the north of the country is", "Yes"]
    batched = greedy_continuations(tiny_model, prompts, max_new_tokens=6, batch_size=3)
    alone = [greedy_continuations(tiny_model, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == alone
    assert all(isinstance(t, str) and t for t in batched)


def _clear_head(model) -> None:
    model.extra.pop("output_head", None)


PROMPTS = ["I love the colour of autumn leaves. My team is", "Hello there", "a b c d e f g"]
TOKEN_IDS = [[5, 17, 100, 200], [3, 9], [1, 2, 3]]


def _differences(values):
    return [v - v[0] for v in values]


def test_subset_head_logits_differ_from_log_probs_by_one_constant_per_prompt(tiny_model):
    from probes.behavior.scoring import _output_head, next_token_logits_at, next_token_logprobs_at

    _clear_head(tiny_model)
    assert _output_head(tiny_model) is not None  # both tiny models take the fast path
    full = next_token_logprobs_at(tiny_model, PROMPTS, TOKEN_IDS)
    fast = next_token_logits_at(tiny_model, PROMPTS, TOKEN_IDS)
    for a, b in zip(_differences(full), _differences(fast), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # and they are not log-probabilities themselves: the normaliser is skipped
    assert not torch.allclose(full[0], fast[0])


def test_subset_head_applies_the_logit_soft_cap(tiny_gemma):
    from probes.behavior.scoring import next_token_logits_at, next_token_logprobs_at

    config = tiny_gemma.hf_model.config
    saved = config.final_logit_softcapping
    try:
        config.final_logit_softcapping = 0.5  # tiny enough to bend every logit
        _clear_head(tiny_gemma)
        full = next_token_logprobs_at(tiny_gemma, PROMPTS, TOKEN_IDS)
        fast = next_token_logits_at(tiny_gemma, PROMPTS, TOKEN_IDS)
        assert float(fast[0].abs().max()) <= 0.5
        for a, b in zip(_differences(full), _differences(fast), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    finally:
        config.final_logit_softcapping = saved
        _clear_head(tiny_gemma)


def test_a_head_the_hand_computation_cannot_reproduce_takes_the_full_head(tiny_gpt2):
    from probes.behavior import scoring as behavior

    # GPT-2 applies no soft-cap: a config that claims one no longer matches the model's logits
    tiny_gpt2.hf_model.config.final_logit_softcapping = 0.5
    _clear_head(tiny_gpt2)
    try:
        assert behavior._output_head(tiny_gpt2) is None
        full = behavior.next_token_logprobs_at(tiny_gpt2, PROMPTS, TOKEN_IDS)
        fallback = behavior.next_token_logits_at(tiny_gpt2, PROMPTS, TOKEN_IDS)
        for a, b in zip(full, fallback, strict=True):
            assert torch.equal(a, b)
    finally:
        del tiny_gpt2.hf_model.config.final_logit_softcapping
        _clear_head(tiny_gpt2)
