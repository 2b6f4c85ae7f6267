"""One dashboard conversation: its turns, the readings after every user turn, the replies
(unsteered and steered side by side), the pins in force and everything the export holds.

All model work goes through one lock: a second request while one runs (another tab, a double
click) is refused with :class:`BusyError` instead of waiting or interleaving.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from probes import __version__
from probes.dashboard.engine import Branch, ChatEngine, Pin, Reply
from probes.errors import ProbesError

MAX_MESSAGE_CHARS = 4000
MAX_MESSAGE_TOKENS = 400
EXPORT_FORMAT = "probes-dashboard-session"


class BusyError(ProbesError):
    """The model is already working on a request of this session."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SteerSettings:
    """The default band of layers and strength the page offers, for this model."""

    layers: tuple[int, ...]
    strength: float


class Session:
    """The conversation state behind the page (one per server; every tab sees the same one)."""

    def __init__(self, engine: ChatEngine, settings: SteerSettings):
        self.engine = engine
        self.settings = settings
        self.lock = threading.Lock()
        self.reset()

    # ---------------------------------------------------------------------------- state
    def reset(self) -> None:
        """Start a new conversation (the pins stay)."""
        self.turns: list[dict[str, Any]] = []
        self.branch = Branch()
        self.before_reply: Branch | None = None
        self.tokens: list[dict[str, Any]] = []
        self.tokens_before_reply = 0
        self.interventions: list[dict[str, Any]] = getattr(self, "interventions", [])
        self.pins: dict[str, Pin] = getattr(self, "pins", {})
        self.started = _now()

    def _busy(self) -> None:
        if not self.lock.acquire(blocking=False):
            raise BusyError(
                "the model is busy with another request (another tab?); try again when it ends"
            )

    def _pins(self) -> list[Pin]:
        return list(self.pins.values())

    def _turn_pairs(self, extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
        return [(t["role"], t["text"]) for t in self.turns] + list(extra)

    def check_message(self, text: Any) -> str:
        """The message, or a one-line ProbesError for an empty or oversize one."""
        if not isinstance(text, str) or not text.strip():
            raise ProbesError("the message is empty: type something first")
        text = text.strip()
        if len(text) > MAX_MESSAGE_CHARS:
            raise ProbesError(
                f"the message has {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}"
            )
        n = len(self.engine.encode(text, False))
        if n > MAX_MESSAGE_TOKENS:
            raise ProbesError(f"the message has {n} tokens; the limit is {MAX_MESSAGE_TOKENS}")
        return text

    def set_pin(
        self,
        attribute: str,
        cls: str | None,
        strength: float | None = None,
        layers: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Pin ``attribute`` to ``cls`` (None: unpin); logged for the export."""
        readers = self.engine.bundle.readers
        if attribute not in readers:
            raise ProbesError(f"unknown attribute {attribute!r}; known: {', '.join(readers)}")
        if cls is None:
            self.pins.pop(attribute, None)
            self.interventions.append({"at": _now(), "action": "unpin", "attribute": attribute})
            return self.state()["pins"]
        reader = readers[attribute]
        if cls not in reader.classes:
            raise ProbesError(
                f"{attribute} has no class {cls!r}; it has {', '.join(reader.classes)}"
            )
        value = self.settings.strength if strength is None else float(strength)
        if not -2.0 <= value <= 2.0:
            raise ProbesError(f"strength {value} is outside -2..2 (residual-norm units)")
        band = tuple(int(k) for k in (layers if layers else self.settings.layers))
        for layer in band:
            reader.direction(cls, layer)  # a one-line error for a layer out of range
        pin = Pin(attribute, cls, value, band)
        self.pins[attribute] = pin
        self.interventions.append(
            {"at": _now(), "action": "pin", "turn": len(self.turns), **pin.to_dict()}
        )
        return self.state()["pins"]

    # ---------------------------------------------------------------------------- turns
    def user_message(self, text: Any) -> dict[str, Any]:
        """Read the model after a new user turn; the turn joins the conversation."""
        message = self.check_message(text)
        self._busy()
        try:
            if self.turns and self.turns[-1]["role"] == "user":
                raise ProbesError("the last message has no reply yet: wait for it or regenerate")
            pairs = self._turn_pairs([("user", message)])
            piece, extends = self.engine.new_piece(self.branch, pairs)
            pins = self._pins()
            reading = self.engine.read(self.branch, piece, pins, replace=not extends)
            turn = {
                "role": "user",
                "text": message,
                "at": _now(),
                "readings": reading.probs,
                "reading_seconds": round(reading.seconds, 4),
                "pins": [p.to_dict() for p in pins],
                "piece": piece,
                "replace": not extends,
            }
            self.turns.append(turn)
            return {"turn": len(self.turns) - 1, **self._public(turn)}
        finally:
            self.lock.release()

    def reply(
        self, on_token: Callable[[str, str], None] | None = None, regenerate: bool = False
    ) -> dict[str, Any]:
        """Generate the reply to the last user turn (``regenerate``: replace the last reply).

        With pins, the steered reply joins the conversation and the unsteered one is kept
        beside it; each comes with the readings after it. ``on_token(channel, text)`` streams."""
        self._busy()
        try:
            if regenerate:
                if not self.turns or self.turns[-1]["role"] != "assistant":
                    raise ProbesError("there is no reply to regenerate yet")
                self.turns.pop()
                assert self.before_reply is not None
                self.branch = self.before_reply
                del self.tokens[self.tokens_before_reply :]
            if not self.turns or self.turns[-1]["role"] != "user":
                raise ProbesError("send a message first: the last turn already has a reply")
            user = self.turns[-1]
            piece, replace = user["piece"], user["replace"]
            pins = self._pins()
            channels = [("steered", pins), ("unsteered", [])] if pins else [("unsteered", [])]
            replies: dict[str, Any] = {}
            kept: Reply | None = None
            for channel, channel_pins in channels:
                emit = (lambda t, c=channel: on_token(c, t)) if on_token else None
                out = self.engine.reply(
                    self.branch, piece, channel_pins, on_token=emit, replace=replace
                )
                after = self.engine.read(
                    out.branch, "", channel_pins, last_control=out.token_probs[-1]
                )
                replies[channel] = {"text": out.text, "readings": after.probs}
                kept = kept or out
            assert kept is not None
            self.before_reply = self.branch
            if replace:
                self.tokens = []
            self.tokens_before_reply = len(self.tokens)
            bos = self.engine.model.tokenizer.bos_token
            for k, (token, probs) in enumerate(zip(kept.tokens, kept.token_probs, strict=True)):
                if k == 0 and replace and token == bos:
                    continue
                role = "user" if k < kept.n_piece else "assistant"
                self.tokens.append({"text": token, "role": role, "probs": probs})
            self.branch = kept.branch
            main = "steered" if pins else "unsteered"
            turn = {
                "role": "assistant",
                "text": replies[main]["text"].strip(),
                "at": _now(),
                "replies": replies,
                "pins": [p.to_dict() for p in pins],
                "regenerated": regenerate,
            }
            self.turns.append(turn)
            return {"turn": len(self.turns) - 1, **self._public(turn)}
        finally:
            self.lock.release()

    # ---------------------------------------------------------------------------- views
    @staticmethod
    def _public(turn: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in turn.items() if k not in ("piece", "replace")}

    def state(self) -> dict[str, Any]:
        """What a (new) tab needs to draw the page."""
        return {
            "turns": [self._public(t) for t in self.turns],
            "pins": {a: p.to_dict() for a, p in self.pins.items()},
            "tokens": self.tokens,
            "busy": self.lock.locked(),
        }

    def export(self) -> dict[str, Any]:
        """The conversation, the readings per turn and the interventions, as one JSON object."""
        bundle = self.engine.bundle
        return {
            "format": EXPORT_FORMAT,
            "version": 1,
            "probes_version": __version__,
            "started": self.started,
            "exported": _now(),
            "model": {"name": self.engine.model.name, "fingerprint": self.engine.model.fingerprint},
            "frame": bundle.frame,
            "readers": bundle.summary(),
            "steering_defaults": {
                "layers": list(self.settings.layers),
                "strength": self.settings.strength,
                "scope": "generation",
                "units": "typical residual norm at the layer",
            },
            **self.state(),
            "interventions": self.interventions,
        }
