"""Built-in behaviour answers are single tokens of the embedded Gemma 3 tokenizer."""

from __future__ import annotations

import pytest

from probes.datasets import BehaviorItem, load_behavior_items, multi_token_answers
from probes.datasets.behavior import behavior_attributes

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("attribute", behavior_attributes())
def test_answers_are_single_tokens(gemma, attribute: str) -> None:
    items = load_behavior_items(attribute)
    assert len(items) >= 40
    assert multi_token_answers(items, gemma.tokenizer) == []


def test_the_check_flags_multi_token_answers(gemma) -> None:
    item = BehaviorItem("x", "a", "t", "c", "p", {"a": (" nappies",), "b": (" £",)}, "a", "b")
    assert multi_token_answers([item], gemma.tokenizer) == [("x", " nappies")]
