"""What the model does: next-token and continuation log-probabilities, never full-vocab logits
for every position (with a 262k vocabulary the head costs more than the body)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from probes.batching import collate, encode, length_sorted_batches, pad_token_id
from probes.models import LoadedModel


@torch.inference_mode()
def continuation_logprobs(
    model: LoadedModel,
    prompts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 16,
) -> Float[Tensor, " n"]:
    """Summed log-probability of each continuation (any number of tokens) after its prompt.

    Prompt and continuation are tokenized separately and joined, so the continuation's tokens
    are exactly its own. Logits are computed only for the continuation's positions.
    """
    if len(prompts) != len(continuations):
        raise ValueError("prompts and continuations must have the same length")
    tok = model.tokenizer
    prompt_ids = encode(tok, prompts)
    cont_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in continuations]
    if any(len(c) == 0 for c in cont_ids):
        raise ValueError("every continuation must contain at least one token")
    full = [p + c for p, c in zip(prompt_ids, cont_ids, strict=True)]
    out = torch.zeros(len(full), dtype=torch.float64)
    for idx in length_sorted_batches([len(s) for s in full], batch_size):
        batch = collate([full[i] for i in idx], pad_token_id(tok), "left", model.device)
        keep = max(len(cont_ids[i]) for i in idx) + 1
        logits = model.hf_model(**batch.model_kwargs(), logits_to_keep=keep).logits
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        for row, i in enumerate(idx):
            n = len(cont_ids[i])
            targets = torch.as_tensor(cont_ids[i], device=logprobs.device)
            # position keep-1 predicts the token after the last one; the continuation's
            # tokens are the last n, predicted by positions keep-1-n .. keep-2.
            steps = logprobs[row, keep - 1 - n : keep - 1]
            out[i] = steps.gather(1, targets[:, None]).sum().cpu()
    return out


@torch.inference_mode()
def greedy_continuations(
    model: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 12
) -> list[str]:
    """Greedy continuations, one prompt at a time (for qualitative reading)."""
    outputs = []
    for prompt in prompts:
        ids = torch.as_tensor([encode(model.tokenizer, [prompt])[0]], device=model.device)
        generated = model.hf_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_token_id(model.tokenizer),
        )
        outputs.append(model.tokenizer.decode(generated[0, ids.shape[1] :]))
    return outputs
