"""Turn examples into prompt strings: raw text, a plain chat frame, or a chat template."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from probes.datasets.schema import Dataset, Example
from probes.errors import DatasetError

Frame = Literal["raw", "chat", "template"]
FRAMES: tuple[str, ...] = ("raw", "chat", "template")
RENDER_VERSION = "render-v2"  # v2: a suffix after a turn header loses its leading spaces
_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class RenderSpec:
    """How an example becomes a prompt: the frame, then an optional read-out suffix."""

    frame: Frame = "raw"
    suffix: str | None = None

    def __post_init__(self) -> None:
        if self.frame not in FRAMES:
            raise DatasetError(
                f"Unknown render frame {self.frame!r}; expected one of {', '.join(FRAMES)}."
            )
        if self.suffix is not None and not isinstance(self.suffix, str):
            raise DatasetError("The render suffix must be a string or None.")

    def key(self) -> str:
        """A stable string naming this rendering, for cache keys."""
        suffix = json.dumps(self.suffix, ensure_ascii=True)
        return f"{RENDER_VERSION}|frame={self.frame}|suffix={suffix}"


def _turns(example: Example) -> list[tuple[str, str]]:
    """The example as chat turns (a plain text is one user turn)."""
    if example.messages is not None:
        return list(example.messages)
    return [("user", example.text or "")]


def _chat_frame(example: Example) -> str:
    """'User: ...\\nAssistant:' with every turn labelled; ends ready for the assistant to speak."""
    turns = _turns(example)
    lines = [f"{_ROLE_NAMES[role]}: {content}" for role, content in turns]
    if turns[-1][0] != "assistant":
        lines.append("Assistant:")
    return "\n".join(lines)


def _check_template_tokenizer(tokenizer: Any) -> None:
    """Refuse the 'template' frame without a tokenizer that has a chat template."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise DatasetError(
            "The 'template' frame needs a tokenizer with a chat template; "
            "use frame 'chat' for base models."
        )


def _template_frame(example: Example, tokenizer: Any) -> str:
    """The tokenizer's chat template with a generation prompt, leading BOS removed."""
    _check_template_tokenizer(tokenizer)
    turns = _turns(example)
    messages = [{"role": role, "content": content} for role, content in turns]
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=turns[-1][0] != "assistant"
    )
    if not isinstance(text, str):
        raise DatasetError("The tokenizer's chat template did not return a string.")
    bos = getattr(tokenizer, "bos_token", None)
    if bos:
        while text.startswith(bos):
            text = text[len(bos) :]
    return text


def attach(prompt: str, text: str) -> str:
    """``prompt + text``, except that a chat template's turn header (ending in a newline) is
    followed by ``text`` without its leading spaces: the assistant's turn starts right there."""
    if prompt.endswith("\n"):
        return prompt + text.lstrip(" ")
    return prompt + text


def render_one(example: Example, spec: RenderSpec, tokenizer: Any = None) -> str:
    """Render a single example; see `render`."""
    if spec.frame == "raw":
        text = example.user_text
    elif spec.frame == "chat":
        text = _chat_frame(example)
    else:
        text = _template_frame(example, tokenizer)
    return attach(text, spec.suffix or "")


def render(
    examples: Dataset | Sequence[Example],
    spec: RenderSpec = RenderSpec(),
    tokenizer: Any = None,
) -> list[str]:
    """Prompt strings for the examples: frame, then suffix. Never adds BOS (the tokenizer does).

    raw: the user's text (chat examples: user turns joined by newlines);
    chat: "User: ...\\nAssistant:"; template: the tokenizer's chat template + generation prompt
    (every turn of a multi-turn row kept), so a suffix opens the assistant's turn.
    """
    if not isinstance(spec, RenderSpec):
        raise DatasetError("render() needs a RenderSpec.")
    if spec.frame == "template":
        _check_template_tokenizer(tokenizer)
    return [render_one(ex, spec, tokenizer) for ex in examples]
