"""Tiny random-weight models of many real decoder architectures, saved as local HF folders.

Each entry is a small config in code (2 layers, d_model 64, the byte-level tokenizer's vocab);
:func:`save_tiny_architecture` writes it with ``save_pretrained`` (safetensors) next to a
tokenizer, so tests drive it through ``load_model(folder)`` exactly as a user's model folder.
Nothing here is special-cased downstream: the suite reaches every architecture through
TransformerBridge's hook names and the Hugging Face body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from probes.models.tiny import TINY_SEED, build_byte_tokenizer

_SPECIAL_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}

# model_type -> (architecture class name, config keywords). Sizes are the smallest each
# architecture accepts with grouped-query attention where it has it.
_LLAMA_LIKE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
TINY_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaForCausalLM", dict(_LLAMA_LIKE)),
    "mistral": ("MistralForCausalLM", {**_LLAMA_LIKE, "sliding_window": 64}),
    "qwen2": ("Qwen2ForCausalLM", dict(_LLAMA_LIKE)),
    "qwen3": ("Qwen3ForCausalLM", {**_LLAMA_LIKE, "head_dim": 16}),
    "gemma3_text": (
        "Gemma3ForCausalLM",
        {
            **_LLAMA_LIKE,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "sliding_window": 32,
            "layer_types": ["sliding_attention", "full_attention"],
        },
    ),
    "phi3": ("Phi3ForCausalLM", dict(_LLAMA_LIKE)),
    "gpt_neox": (
        "GPTNeoXForCausalLM",
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 512,
            "rotary_pct": 0.5,
        },
    ),
    "gpt2": ("GPT2LMHeadModel", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512}),
    # Not in the list: proof that nothing downstream is written per architecture.
    "olmo2": ("Olmo2ForCausalLM", dict(_LLAMA_LIKE)),
    # Granite divides its logits by logits_scaling: the answer-token fast path must fall back.
    "granite": ("GraniteForCausalLM", {**_LLAMA_LIKE, "logits_scaling": 8.0}),
}


def tiny_architecture_config(model_type: str, vocab_size: int) -> Any:
    """The small config of ``model_type`` (a key of :data:`TINY_ARCHITECTURES`)."""
    from transformers import AutoConfig

    if model_type not in TINY_ARCHITECTURES:
        known = ", ".join(TINY_ARCHITECTURES)
        raise ValueError(f"no tiny config for {model_type!r}: use one of {known}")
    architecture, kwargs = TINY_ARCHITECTURES[model_type]
    return AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size,
        architectures=[architecture],
        **_SPECIAL_IDS,
        **kwargs,
    )


def build_tiny_architecture(
    model_type: str, seed: int = TINY_SEED, tokenizer: Any = None
) -> tuple[Any, Any]:
    """(random-weight HF causal LM, tokenizer) for ``model_type``, seeded and float32."""
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer if tokenizer is not None else build_byte_tokenizer()
    config = tiny_architecture_config(model_type, len(tokenizer))
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    finally:
        torch.random.set_rng_state(state)
    return model.eval(), tokenizer


def save_tiny_architecture(
    model_type: str, folder: str | Path, seed: int = TINY_SEED, tokenizer: Any = None
) -> Path:
    """Write a tiny ``model_type`` model and its tokenizer as a local Hugging Face folder."""
    model, tok = build_tiny_architecture(model_type, seed, tokenizer)
    path = Path(folder)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
