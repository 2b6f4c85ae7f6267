"""The model side of the dashboard: a conversation's token ids and KV cache, the reading pass
(one forward of the new tokens that stops at the highest layer any reader needs, then every
attribute's read-out suffix in one batch over a copy of the cache), and streamed greedy replies.

Steering pins use ``probes.interventions.steer`` with scope ``"generation"``: every token the
model processes with a non-empty KV cache (its replies, later turns and the read-out suffixes)
is steered; the first prompt pass of a conversation is not.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from probes.cache.extraction import fast_attention
from probes.cache.store import SITE_HOOKS
from probes.datasets.render import RenderSpec, render_one
from probes.datasets.schema import Example
from probes.interventions.hooks import steer
from probes.models.compat import cache_keyword
from probes.models.loading import LoadedModel
from probes.readers.bundle import ReaderBundle


class _Stop(Exception):
    """Raised from the last hook a reading pass needs: the later blocks never run."""


@dataclass(frozen=True)
class Pin:
    """Steer ``attribute`` towards ``cls`` over ``layers`` at ``strength`` (residual-norm units)."""

    attribute: str
    cls: str
    strength: float
    layers: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "class": self.cls,
            "strength": self.strength,
            "layers": list(self.layers),
            "scope": "generation",
        }


@dataclass
class Branch:
    """A conversation's tokens so far and the KV cache that covers all of them."""

    text: str = ""
    ids: list[int] = field(default_factory=list)
    cache: Any = None

    def copy(self) -> Branch:
        return Branch(self.text, list(self.ids), copy.deepcopy(self.cache))


@dataclass
class Reading:
    """Per attribute: class probabilities of the reading and the control probe."""

    probs: dict[str, dict[str, list[float]]]
    token_probs: list[dict[str, list[float]]]  # control-probe probabilities per new token
    tokens: list[str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"probs": self.probs, "seconds": round(self.seconds, 4)}


@dataclass
class Reply:
    """A generated reply, the branch it extends, and per processed token its text and the
    control-probe probabilities (the first ``n_piece`` tokens are the turn's own)."""

    branch: Branch
    text: str
    token_probs: list[dict[str, list[float]]]
    tokens: list[str]
    n_piece: int


class ChatEngine:
    """Reads and generates for one model with one reader bundle (checked against the model)."""

    def __init__(self, model: LoadedModel, bundle: ReaderBundle, max_new_tokens: int = 40):
        bundle.check_model(model.fingerprint, model.name)
        self.model = model
        self.bundle = bundle
        self.max_new_tokens = max_new_tokens
        self.frame = bundle.frame
        self.attributes = list(bundle.readers)
        self.control_layers = sorted({r.control.layer or 0 for r in bundle.readers.values()})
        self.reading_layers = sorted({r.reading.layer or 0 for r in bundle.readers.values()})
        tok = model.tokenizer
        eos = model.hf_model.generation_config.eos_token_id
        eos = eos if eos is not None else tok.eos_token_id
        self.stops = set(eos if isinstance(eos, list) else [eos]) - {None}
        pad = tok.pad_token_id
        self.pad = int(pad if pad is not None else (tok.eos_token_id or 0))

    # ---------------------------------------------------------------------------- framing
    def render(self, turns: Sequence[tuple[str, str]]) -> str:
        """The conversation in the bundle's frame, ready for the assistant to speak."""
        example = Example(id="chat", attribute="chat", label="", group="", messages=tuple(turns))
        return render_one(example, RenderSpec(self.frame), self.model.tokenizer)  # type: ignore[arg-type]

    def new_piece(self, branch: Branch, turns: Sequence[tuple[str, str]]) -> tuple[str, bool]:
        """The text to add to ``branch`` for ``turns``; False when the frame does not extend the
        branch's text (then the whole conversation is encoded again)."""
        if self.frame == "chat" and branch.ids and turns and turns[-1][0] == "user":
            return f"\nUser: {turns[-1][1]}\nAssistant:", True  # the chat frame, one turn on
        full = self.render(turns)
        if branch.text and full.startswith(branch.text):
            return full[len(branch.text) :], True
        return full, False

    def encode(self, text: str, first: bool) -> list[int]:
        ids = self.model.tokenizer(text, add_special_tokens=first)["input_ids"]
        return list(ids)

    # ---------------------------------------------------------------------------- steering
    @contextlib.contextmanager
    def steering(self, pins: Sequence[Pin]) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for pin in pins:
                reader = self.bundle.readers[pin.attribute]
                directions = reader.band(pin.cls, pin.layers)
                stack.enter_context(steer(self.model, directions, pin.strength, scope="generation"))
            yield

    # ---------------------------------------------------------------------------- reading
    def _probs(self, kind: str, acts: dict[int, Tensor]) -> dict[str, Tensor]:
        """Class probabilities [rows, classes] per attribute from residuals per layer."""
        out = {}
        for name, reader in self.bundle.readers.items():
            probe = reader.reading if kind == "reading" else reader.control
            out[name] = probe.predict_proba(acts[probe.layer or 0].double().cpu()).float()
        return out

    def _run_capture(
        self,
        ids: Tensor,
        cache: Any,
        layers: Sequence[int],
        stop_at: int | None,
        attention_mask: Tensor | None = None,
    ) -> dict[int, Tensor]:
        """One body forward of ``ids`` on ``cache``, keeping resid_post at ``layers``."""
        kept: dict[int, Tensor] = {}

        def make(layer: int) -> Callable[..., None]:
            def hook(acts: Tensor, hook: Any) -> None:
                kept[layer] = acts.detach()
                if layer == stop_at:
                    raise _Stop

            return hook

        hooks = [(SITE_HOOKS["resid_post"].format(layer=k), make(k)) for k in layers]
        body = self.model.hf_model.base_model
        with self.model.bridge.hooks(fwd_hooks=hooks), contextlib.suppress(_Stop):
            kwargs = {cache_keyword(body): cache}
            body(input_ids=ids, attention_mask=attention_mask, use_cache=True, **kwargs)
        return kept

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.hf_model.config)

    @torch.inference_mode()
    def read(
        self,
        branch: Branch,
        piece: str,
        pins: Sequence[Pin] = (),
        replace: bool = False,
        last_control: dict[str, list[float]] | None = None,
    ) -> Reading:
        """Readings after ``branch`` + ``piece``, without changing ``branch``.

        One forward of the piece's tokens over a copy of the cache stops at the deepest reader
        layer; the read-out suffixes of all attributes then run as one batch over that cache.
        With an empty piece (after a reply) the control probe's reading is ``last_control``."""
        start = time.perf_counter()
        first = replace or not branch.ids
        new_ids = self.encode(piece, first)
        cache = self._new_cache() if first else copy.deepcopy(branch.cache)
        device = self.model.device
        deepest = self.bundle.layers_needed
        with fast_attention(self.model.hf_model), self.steering(pins):
            if new_ids:
                acts = self._run_capture(
                    torch.tensor([new_ids], device=device),
                    cache,
                    sorted(set(self.control_layers) | set(self.reading_layers)),
                    deepest,
                )
                control = self._probs("control", {k: v[0] for k, v in acts.items()})
            else:
                last = last_control or {}
                control = {a: torch.tensor([last.get(a, [])]) for a in self.attributes}
            suffix_ids = [
                self.encode(self.bundle.readers[a].suffix, False) for a in self.attributes
            ]
            width = max(len(s) for s in suffix_ids)
            past = cache.get_seq_length()
            batch = torch.full((len(suffix_ids), width), self.pad, dtype=torch.long)
            mask = torch.zeros(len(suffix_ids), past + width, dtype=torch.long)
            mask[:, :past] = 1
            for row, ids in enumerate(suffix_ids):
                batch[row, : len(ids)] = torch.tensor(ids)
                mask[row, past : past + len(ids)] = 1
            cache.batch_repeat_interleave(len(suffix_ids))
            suffix_acts = self._run_capture(
                batch.to(device),
                cache,
                self.reading_layers,
                max(self.reading_layers),
                mask.to(device),
            )
        ends = torch.tensor([len(s) - 1 for s in suffix_ids])
        rows = torch.arange(len(suffix_ids))
        reading = self._probs("reading", {k: v[rows, ends] for k, v in suffix_acts.items()})
        probs = {
            name: {
                "reading": reading[name][i].tolist(),
                "control": control[name][-1].tolist(),
            }
            for i, name in enumerate(self.attributes)
        }
        tokens = [self.model.tokenizer.decode([t]) for t in new_ids]
        token_probs = [
            {a: control[a][j].tolist() for a in self.attributes} for j in range(len(new_ids))
        ]
        return Reading(probs, token_probs, tokens, time.perf_counter() - start)

    # ---------------------------------------------------------------------------- replies
    @torch.inference_mode()
    def reply(
        self,
        branch: Branch,
        piece: str,
        pins: Sequence[Pin] = (),
        on_token: Callable[[str], None] | None = None,
        replace: bool = False,
        max_new_tokens: int | None = None,
    ) -> Reply:
        """Greedy reply after ``branch`` + ``piece``: the extended branch, the reply text and the
        control-probe probabilities of every token processed (piece, then reply)."""
        first = replace or not branch.ids
        out = Branch(branch.text, [], None) if first else branch.copy()
        if first:
            out.text = ""
        out.cache = out.cache if out.cache is not None else self._new_cache()
        new_ids = self.encode(piece, first)
        hf = self.model.hf_model
        device = self.model.device
        token_rows: list[dict[str, list[float]]] = []
        token_text = [self.model.tokenizer.decode([t]) for t in new_ids]
        reply_ids: list[int] = []
        limit = max_new_tokens or self.max_new_tokens
        hooks_layers = self.control_layers
        kept: dict[int, Tensor] = {}

        def make(layer: int) -> Callable[..., None]:
            def hook(acts: Tensor, hook: Any) -> None:
                kept[layer] = acts.detach()[0]

            return hook

        hooks = [(SITE_HOOKS["resid_post"].format(layer=k), make(k)) for k in hooks_layers]

        def collect() -> None:
            control = self._probs("control", kept)
            n = next(iter(control.values())).shape[0]
            token_rows.extend(
                {a: control[a][j].tolist() for a in self.attributes} for j in range(n)
            )

        with (
            fast_attention(hf),
            self.steering(pins),
            self.model.bridge.hooks(fwd_hooks=hooks),
        ):
            ids = torch.tensor([new_ids], device=device)
            step = 0
            while True:
                kwargs = {cache_keyword(hf): out.cache}
                logits = hf(input_ids=ids, use_cache=True, logits_to_keep=1, **kwargs).logits
                collect()
                if step >= limit:
                    break
                token = int(logits[0, -1].argmax())
                text = self.model.tokenizer.decode([token])
                if token in self.stops or "\n" in text:
                    break
                reply_ids.append(token)
                token_text.append(text)
                if on_token is not None:
                    on_token(text)
                ids = torch.tensor([[token]], device=device)
                step += 1
        reply = self.model.tokenizer.decode(reply_ids)
        out.ids = [*out.ids, *new_ids, *reply_ids]
        out.text = out.text + piece + reply
        return Reply(out, reply, token_rows, token_text, len(new_ids))
