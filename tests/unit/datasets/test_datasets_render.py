"""Rendering: raw, chat and chat-template frames, suffixes, cache keys."""

from __future__ import annotations

from typing import Any

import pytest

from probes.datasets import Example, RenderSpec, load_dataset, render
from probes.errors import DatasetError

TEXT = Example("t", "dialect", "uk", "g", text="I love the colour of autumn leaves.")
CHAT = Example(
    "c",
    "dialect",
    "uk",
    "g",
    messages=(
        ("system", "Be brief."),
        ("user", "Hi there."),
        ("assistant", "Hello!"),
        ("user", "Fancy tea?"),
    ),
)


class FakeTemplateTokenizer:
    """Mimics a Hugging Face tokenizer whose chat template starts with BOS (as Gemma's does)."""

    bos_token = "<bos>"
    chat_template = "{{ bos_token }}..."

    def apply_chat_template(
        self, messages: list[dict[str, Any]], tokenize: bool, add_generation_prompt: bool
    ) -> str:
        assert tokenize is False
        body = "".join(
            f"<start_of_turn>{m['role']}\n{m['content']}<end_of_turn>\n" for m in messages
        )
        return self.bos_token + body + ("<start_of_turn>model\n" if add_generation_prompt else "")


def test_raw_frame_is_the_user_text() -> None:
    assert render([TEXT]) == ["I love the colour of autumn leaves."]
    assert render([CHAT], RenderSpec("raw")) == ["Hi there.\nFancy tea?"]


def test_chat_frame() -> None:
    assert render([TEXT], RenderSpec("chat")) == [
        "User: I love the colour of autumn leaves.\nAssistant:"
    ]
    assert render([CHAT], RenderSpec("chat")) == [
        "System: Be brief.\nUser: Hi there.\nAssistant: Hello!\nUser: Fancy tea?\nAssistant:"
    ]


def test_suffix_follows_the_frame() -> None:
    spec = RenderSpec("chat", suffix=" I think the dialect of this user is")
    assert render([TEXT], spec) == [
        "User: I love the colour of autumn leaves.\nAssistant: I think the dialect of this user is"
    ]
    assert render([TEXT], RenderSpec(suffix=" Region:"))[0].endswith("leaves. Region:")


def test_template_frame_uses_the_tokenizer_and_drops_bos() -> None:
    out = render([TEXT, CHAT], RenderSpec("template", suffix=" I think"), FakeTemplateTokenizer())
    assert out[0] == (
        "<start_of_turn>user\nI love the colour of autumn leaves.<end_of_turn>\n"
        "<start_of_turn>model\nI think"
    )
    assert not out[1].startswith("<bos>") and out[1].count("<start_of_turn>") == 5


def test_template_frame_needs_a_chat_template() -> None:
    with pytest.raises(DatasetError, match="chat template"):
        render([TEXT], RenderSpec("template"))

    class NoTemplate:
        chat_template = None

    with pytest.raises(DatasetError, match="chat template"):
        render([TEXT], RenderSpec("template"), NoTemplate())


def test_bad_frame() -> None:
    with pytest.raises(DatasetError, match="Unknown render frame 'html'"):
        RenderSpec("html")  # type: ignore[arg-type]


def test_keys_are_stable_and_distinct() -> None:
    specs = [
        RenderSpec(),
        RenderSpec("chat"),
        RenderSpec("template"),
        RenderSpec(suffix=" x"),
        RenderSpec(suffix=""),
        RenderSpec("chat", " x"),
    ]
    keys = [s.key() for s in specs]
    assert len(set(keys)) == len(keys)
    assert RenderSpec("chat", " x").key() == RenderSpec("chat", " x").key()
    assert all("\n" not in k for k in keys)


def test_render_accepts_a_dataset() -> None:
    ds = load_dataset("proficiency", size=8)
    assert render(ds) == ds.texts
