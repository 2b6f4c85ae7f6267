"""Other tokenizers and chat models: answers are re-tokenised for the loaded tokenizer and a
multi-token answer scores as the sum of its tokens' log-probabilities (on the byte tokenizer,
where every answer longer than one byte is several tokens); with a chat template every dataset
renders as a conversation and the reading suffix opens the assistant's turn."""

from __future__ import annotations

import pytest
import torch

from probes.behavior.scoring import (
    answer_set_logprobs,
    behavior_log_odds,
    next_token_logprobs_at,
)
from probes.cache import extract_dataset
from probes.datasets import (
    BehaviorItem,
    RenderSpec,
    behavior_attributes,
    builtin_names,
    list_datasets,
    load_behavior_items,
    load_dataset,
    render,
    render_behavior,
)
from probes.datasets.schema import Dataset, Example
from probes.models.architectures import save_tiny_architecture
from probes.models.loading import load_model
from probes.models.tiny import build_byte_tokenizer


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat-llama")
    save_tiny_architecture("llama", folder, tokenizer=build_byte_tokenizer(chat=True))
    return load_model(str(folder), device="cpu")


def _by_hand(model, prompt: str, answer: str) -> float:
    """sum_k log p(answer_k | prompt, answer_<k), one next-token call per step."""
    ids = model.tokenizer(answer, add_special_tokens=False)["input_ids"]
    total = 0.0
    for k, token in enumerate(ids):
        context = prompt + model.tokenizer.decode(ids[:k])
        total += float(next_token_logprobs_at(model, [context], [[token]])[0][0])
    return total


def test_multi_token_answers_score_as_the_sum_of_their_tokens(tiny_model):
    prompts = ["I would like a cup of", "On cold days we drink"]
    tok = tiny_model.tokenizer
    assert len(tok("coffee", add_special_tokens=False)["input_ids"]) == 6  # bytes, no merges
    sets = [[["tea"], ["coffee", "c"]]] * 2  # a multi-token set, and one mixing lengths
    scores = answer_set_logprobs(tiny_model, prompts, sets)
    for i, prompt in enumerate(prompts):
        assert float(scores[i, 0]) == pytest.approx(_by_hand(tiny_model, prompt, "tea"), abs=1e-5)
        mixed = torch.logsumexp(
            torch.tensor([_by_hand(tiny_model, prompt, a) for a in ("coffee", "c")]), dim=0
        )
        assert float(scores[i, 1]) == pytest.approx(float(mixed), abs=1e-5)


def test_behaviour_log_odds_with_multi_token_answers(tiny_gpt2):
    item = BehaviorItem(
        id="x",
        attribute="dialect",
        text="We stood in the queue for ages.",
        cue="uk",
        answer_prefix="I went to the",
        answers={"uk": ("chemist", "shop"), "us": ("drugstore",)},
        positive="uk",
        negative="us",
    )
    prompt = render_behavior([item])[0]
    expected = float(
        torch.logsumexp(
            torch.tensor([_by_hand(tiny_gpt2, prompt, a) for a in item.answers["uk"]]), 0
        )
    ) - _by_hand(tiny_gpt2, prompt, "drugstore")
    assert float(behavior_log_odds(tiny_gpt2, [item])[0]) == pytest.approx(expected, abs=1e-5)


def test_every_dataset_and_behaviour_set_renders_as_a_conversation(chat_model):
    tok = chat_model.tokenizer
    spec = RenderSpec("template")
    for name in builtin_names():
        labels = next(info.labels for info in list_datasets() if info.name == name)
        dataset = load_dataset(name, size=2 * len(labels), seed=0)
        for example, text in zip(dataset.examples, render(dataset, spec, tok), strict=True):
            assert text.startswith("<|im_start|>") and not text.startswith("<bos>")
            assert text.endswith("<|im_start|>assistant\n")
            turns = len(example.messages) if example.messages is not None else 1
            assert text.count("<|im_start|>") == turns + 1  # multi-turn rows stay multi-turn
    for attribute in behavior_attributes():
        items = load_behavior_items(attribute)[:4]
        for item, text in zip(items, render_behavior(items, spec, tok), strict=True):
            # the answer prefix opens the assistant's turn, without a stray leading space
            assert text.endswith(f"<|im_start|>assistant\n{item.answer_prefix}")


def test_reading_suffix_goes_where_the_assistants_turn_starts(chat_model, tmp_path):
    conversation = Example(
        id="c0",
        attribute="age",
        label="teen",
        group="g0",
        messages=(
            ("user", "hey so my mum says i cant go out"),
            ("assistant", "That sounds frustrating."),
            ("user", "ya whatever, homework first"),
        ),
    )
    plain = Example(id="c1", attribute="age", label="adult", group="g1", text="My pension is due.")
    dataset = Dataset(
        name="tiny-age", attribute="age", labels=("teen", "adult"), examples=(conversation, plain)
    )
    suffix = " I think the age of this user is"
    store = extract_dataset(
        chat_model,
        dataset,
        render_spec=RenderSpec("template"),
        position="suffix",
        suffix=suffix,
        cache_root=tmp_path,
        progress=False,
    )
    texts = store.column("text")
    assert texts[0].count("<|im_start|>") == 4  # three turns and the assistant's header
    assert all(text.endswith("<|im_start|>assistant\n") for text in texts)
    # what the model read: the suffix right after the assistant's header, no space before it
    start = chat_model.tokenizer.convert_tokens_to_ids("<|im_start|>")
    for row, text in enumerate(texts):
        ids = chat_model.tokenizer(text + suffix.lstrip())["input_ids"]
        assert ids[0] == chat_model.tokenizer.bos_token_id and ids.count(start) == 4 - 2 * row
        _, cache = chat_model.bridge.run_with_cache(
            torch.tensor([ids]), names_filter=lambda n: n.endswith("hook_out")
        )
        expected = cache["blocks.1.hook_out"][0, -1]
        torch.testing.assert_close(store.get(1)[row], expected, rtol=1e-4, atol=1e-5)
