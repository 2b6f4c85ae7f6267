"""What the model does: next-token and continuation log-probabilities, never full-vocab logits
for every position (with a 262k vocabulary the head costs more than the body)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from probes.models.batching import (
    Batch,
    batch_rows,
    collate,
    encode,
    length_sorted_batches,
    pad_token_id,
    prompt_lengths,
)
from probes.models.head import OutputHead, detect_output_head
from probes.models.loading import LoadedModel


@torch.inference_mode()
def continuation_logprobs(
    model: LoadedModel,
    prompts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 16,
    prompt_rows: Sequence[int] | None = None,
) -> Float[Tensor, " n"]:
    """Summed log-probability of each continuation (any number of tokens) after its prompt.

    Prompt and continuation are tokenized separately and joined, so the continuation's tokens
    are exactly its own. Logits are computed only for the continuation's positions.
    ``prompt_rows[i]`` names the caller's prompt that entry ``i`` belongs to (for per-prompt
    interventions such as patching when one prompt is scored with several continuations).
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
        rows = idx if prompt_rows is None else [prompt_rows[i] for i in idx]
        with batch_rows(rows), prompt_lengths([len(prompt_ids[i]) for i in idx]):
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


def _left_padded_batches(
    model: LoadedModel, prompts: Sequence[str], batch_size: int
) -> Iterator[tuple[list[int], Batch]]:
    """Length-sorted, left-padded batches of the prompts (so position -1 is each prompt's last
    token), with the caller's indices of their rows."""
    tok = model.tokenizer
    prompt_ids = encode(tok, prompts)
    for idx in length_sorted_batches([len(s) for s in prompt_ids], batch_size):
        yield idx, collate([prompt_ids[i] for i in idx], pad_token_id(tok), "left", model.device)


@torch.inference_mode()
def greedy_continuations(
    model: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 12, batch_size: int = 16
) -> list[str]:
    """Greedy continuations (for qualitative reading), batched with left padding.

    Each text ends at the first end-of-sequence token (kept, as a lone generate would)."""
    from probes.validate import check_int

    check_int("max_new_tokens", max_new_tokens)
    tok = model.tokenizer
    eos = model.hf_model.generation_config.eos_token_id
    if eos is None:
        eos = tok.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos]) - {None}
    outputs = [""] * len(prompts)
    for idx, batch in _left_padded_batches(model, prompts, batch_size):
        with batch_rows(idx):
            generated = model.hf_model.generate(
                batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_token_id(tok),
            )
        for row, i in enumerate(idx):
            new = generated[row, batch.input_ids.shape[1] :].tolist()
            end = next((k + 1 for k, t in enumerate(new) if t in stops), len(new))
            outputs[i] = tok.decode(new[:end])
    return outputs


@torch.inference_mode()
def next_token_logprobs_at(
    model: LoadedModel,
    prompts: Sequence[str],
    token_ids: Sequence[Sequence[int]],
    batch_size: int = 16,
) -> list[Float[Tensor, " k"]]:
    """Log-probabilities of chosen next tokens after each prompt (last-position logits only)."""
    out: list[Tensor] = [torch.empty(0)] * len(prompts)
    for idx, batch in _left_padded_batches(model, prompts, batch_size):
        with batch_rows(idx):
            logits = model.hf_model(**batch.model_kwargs(), logits_to_keep=1).logits[:, -1]
        logprobs = torch.log_softmax(logits.double(), dim=-1).cpu()
        for row, i in enumerate(idx):
            out[i] = logprobs[row, torch.as_tensor(list(token_ids[i]), dtype=torch.long)]
    return out


def _output_head(model: LoadedModel) -> OutputHead | None:
    """The LM head as a plain map, or None when scoring a few vocabulary rows by hand would not
    reproduce the model's logits (``load_model`` checks once by running the model)."""
    if "output_head" not in model.extra:
        model.extra["output_head"] = detect_output_head(model.hf_model, model.d_model)
    return model.extra["output_head"]


@torch.inference_mode()
def next_token_logits_at(
    model: LoadedModel,
    prompts: Sequence[str],
    token_ids: Sequence[Sequence[int]],
    batch_size: int = 16,
) -> list[Float[Tensor, " k"]]:
    """Logits of chosen next tokens after each prompt: their log-probabilities up to one
    constant per prompt, so differences within a prompt are exact.

    Only the chosen rows of the output embedding are multiplied, not the full-vocabulary head
    (262k rows for Gemma, a quarter of a short forward pass). Hooks on the unembedding do not
    fire. Models whose logits are not a plain linear map of the final hidden state, with at
    most a soft-cap (checked once by running the model), take the full path.
    """
    head = _output_head(model)
    if head is None:
        return next_token_logprobs_at(model, prompts, token_ids, batch_size)
    weight, bias, cap = head
    out: list[Tensor] = [torch.empty(0)] * len(prompts)
    for idx, batch in _left_padded_batches(model, prompts, batch_size):
        with batch_rows(idx):
            body = model.hf_model.base_model(**batch.model_kwargs())
        hidden = body.last_hidden_state[:, -1].to(weight.device)  # left padding: last token
        for row, i in enumerate(idx):
            rows = torch.as_tensor(list(token_ids[i]), dtype=torch.long, device=weight.device)
            logits = weight[rows] @ hidden[row].to(weight.dtype)
            if bias is not None:
                logits = logits + bias[rows]
            if cap:
                logits = torch.tanh(logits / cap) * cap
            out[i] = logits.double().cpu()
    return out


def answer_set_logprobs(
    model: LoadedModel,
    prompts: Sequence[str],
    answer_sets: Sequence[Sequence[Sequence[str]]],
    batch_size: int = 16,
    relative: bool = False,
) -> Float[Tensor, "n sets"]:
    """log sum_{a in set} p(a | prompt) for each prompt and each of its answer sets.

    Single-token answers share one last-position forward pass per prompt; multi-token answers
    are scored whole with ``continuation_logprobs``. ``relative=True`` allows the values to be
    off by one constant per prompt (differences between sets stay exact): when every answer is
    one token, that skips the full-vocabulary head (``next_token_logits_at``).
    """
    tok = model.tokenizer
    widths = {len(sets) for sets in answer_sets}
    if len(widths) != 1:
        raise ValueError("every prompt needs the same number of answer sets")
    n_sets = widths.pop()
    single: list[list[int]] = []
    owner: list[list[int]] = []  # which set each single-token id belongs to
    multi: list[tuple[int, int, str]] = []
    for i, sets in enumerate(answer_sets):
        ids, owners = [], []
        for s, answers in enumerate(sets):
            for answer in answers:
                pieces = tok(answer, add_special_tokens=False)["input_ids"]
                if len(pieces) == 1:
                    ids.append(pieces[0])
                    owners.append(s)
                else:
                    multi.append((i, s, answer))
        single.append(ids)
        owner.append(owners)
    parts: list[list[list[Tensor]]] = [[[] for _ in range(n_sets)] for _ in prompts]
    scorer = next_token_logits_at if relative and not multi else next_token_logprobs_at
    for i, lp in enumerate(scorer(model, prompts, single, batch_size)):
        for value, s in zip(lp, owner[i], strict=True):
            parts[i][s].append(value.reshape(1))
    if multi:
        scores = continuation_logprobs(
            model,
            [prompts[i] for i, _, _ in multi],
            [a for _, _, a in multi],
            batch_size,
            prompt_rows=[i for i, _, _ in multi],
        )
        for (i, s, _), score in zip(multi, scores, strict=True):
            parts[i][s].append(score.reshape(1))
    return torch.stack(
        [torch.stack([torch.logsumexp(torch.cat(p), dim=0) for p in row]) for row in parts]
    )


def behavior_log_odds(
    model: LoadedModel, items: Sequence[Any], spec: Any = None, batch_size: int = 16
) -> Float[Tensor, " n"]:
    """Answer-set log-odds of each behaviour item: log p(positive set) - log p(negative set)."""
    from probes.datasets import RenderSpec, render_behavior

    prompts = render_behavior(items, spec or RenderSpec(), tokenizer=model.tokenizer)
    sets = [(it.answers[it.positive], it.answers[it.negative]) for it in items]
    scores = answer_set_logprobs(model, prompts, sets, batch_size, relative=True)
    return scores[:, 0] - scores[:, 1]


# --------------------------------------------------------------------------------------------
# Damage and capability: what an intervention costs on text that has nothing to do with it
# --------------------------------------------------------------------------------------------


def neutral_texts() -> list[str]:
    """The built-in neutral sentences (no cue about the writer)."""
    from probes.datasets.builtin import read_data_json

    return list(read_data_json("neutral.json")["texts"])


def neutral_prompts(texts: Sequence[str] | None = None) -> list[str]:
    """Prefixes of neutral sentences (their first 60% of words) whose next token is measured."""
    prompts = []
    for text in texts if texts is not None else neutral_texts():
        words = text.split()
        prompts.append(" ".join(words[: max(2, round(len(words) * 0.6))]))
    return prompts


@torch.inference_mode()
def next_token_logprobs(
    model: LoadedModel, prompts: Sequence[str], batch_size: int = 16
) -> Float[Tensor, "n vocab"]:
    """The full next-token log-distribution after each prompt (last position only)."""
    out = torch.empty(len(prompts), model.vocab_size)
    for idx, batch in _left_padded_batches(model, prompts, batch_size):
        with batch_rows(idx):
            logits = model.hf_model(**batch.model_kwargs(), logits_to_keep=1).logits[:, -1]
        out[torch.as_tensor(idx)] = torch.log_softmax(logits.float(), dim=-1).cpu()
    return out


def kl_divergence(
    reference: Float[Tensor, "n vocab"], current: Float[Tensor, "n vocab"]
) -> Float[Tensor, " n"]:
    """KL(reference || current) per row, from log-probabilities, in nats."""
    ref = reference.double()
    return (ref.exp() * (ref - current.double())).sum(-1)


@torch.inference_mode()
def perplexity(model: LoadedModel, texts: Sequence[str], batch_size: int = 4) -> float:
    """exp(mean negative log-likelihood) of every token after BOS, over all texts.

    Needs logits at every position, so it runs in small batches to bound memory.
    """
    tok = model.tokenizer
    ids = encode(tok, texts)
    total, count = 0.0, 0
    for idx in length_sorted_batches([len(s) for s in ids], batch_size):
        batch = collate([ids[i] for i in idx], pad_token_id(tok), "right", model.device)
        with batch_rows(idx):
            logits = model.hf_model(**batch.model_kwargs()).logits[:, :-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        targets = batch.input_ids[:, 1:]
        picked = logprobs.gather(-1, targets[..., None])[..., 0]
        valid = batch.attention_mask[:, 1:].bool()
        total -= float(picked[valid].double().sum())
        count += int(valid.sum())
    return float(torch.exp(torch.tensor(total / max(count, 1))))


def multiple_choice_correct(
    model: LoadedModel,
    prompts: Sequence[str],
    choices: Sequence[Sequence[str]],
    answers: Sequence[int],
    batch_size: int = 16,
) -> np.ndarray:
    """Whether the correct choice has the highest log-probability, per prompt."""
    sets = [[[c] for c in cs] for cs in choices]
    scores = answer_set_logprobs(model, prompts, sets, batch_size, relative=True)
    return scores.argmax(-1).numpy() == np.asarray(answers)
