"""Whether a model's next-token logits are ``softcap(h @ W.T + b)``, checked by running it.

The answer-token fast path (``probes.behavior.next_token_logits_at``) multiplies only a few
rows of the output embedding. That is right only when the model's logits are exactly its head
applied to the final hidden state, with at most the config's logit soft-cap. Rather than trust
a list of architectures, :func:`detect_output_head` runs one short forward, captures what the
head saw and what the model returned, and accepts the fast path only when the hand-computed
logits reproduce the model's. Anything else (a logit scale, an extra bias, a tied head with a
different post-processing) falls back to the full head.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor


class OutputHead(NamedTuple):
    """The LM head as a plain map: weight ``[vocab, d_model]``, optional bias and soft-cap."""

    weight: Float[Tensor, "vocab d_model"]
    bias: Float[Tensor, " vocab"] | None
    softcap: float | None


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 2e-2


@torch.inference_mode()
def detect_output_head(hf_model: Any, d_model: int, seed: int = 0) -> OutputHead | None:
    """The head as an :class:`OutputHead` when hand-computed logits match the model's, else None.

    Run before any intervention is attached (``load_model`` does): the check is one forward on
    six random tokens with the full head.
    """
    head = hf_model.get_output_embeddings()
    if head is None:
        return None
    inner = getattr(head, "_original_component", head)
    weight, bias = getattr(inner, "weight", None), getattr(inner, "bias", None)
    if not isinstance(weight, Tensor) or weight.ndim != 2 or weight.shape[-1] != d_model:
        return None
    bias = bias if isinstance(bias, Tensor) else None
    config = hf_model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text_config, "final_logit_softcapping", None)
    seen: list[Tensor] = []
    handle = inner.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, int(weight.shape[0]), (1, 6), generator=gen).to(weight.device)
    try:
        logits = hf_model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
    except Exception:  # a model that cannot run this probe simply takes the full head
        return None
    finally:
        handle.remove()
    if len(seen) != 1:
        return None
    hidden = seen[0].reshape(-1, d_model)[-1].to(weight.dtype)
    mine = weight.float() @ hidden.float() + (bias.float() if bias is not None else 0.0)
    if cap:
        mine = torch.tanh(mine / cap) * cap
    expected = logits[0].float()
    scale = float(expected.abs().max()) + 1e-6
    if float((expected - mine).abs().max()) > _tolerance(weight.dtype) * scale:
        return None
    return OutputHead(weight, bias, float(cap) if cap else None)
