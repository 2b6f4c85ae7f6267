"""Tiny random-weight models of real architectures, built from configs in code (no download).

Unit tests run on these: they load in about a second and exercise the same hooks as the real
model. The tokenizer is byte-level (every string encodes, 256 byte tokens plus 4 specials).
"""

from __future__ import annotations

from typing import Any

import torch

_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
TINY_SEED = 0


# A ChatML-style template (as Qwen's), opened by BOS (as Gemma's) so rendering must drop it.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_SPECIALS = ("<|im_start|>", "<|im_end|>")


def build_byte_tokenizer(chat: bool = False) -> Any:
    """A byte-level BPE tokenizer with no merges that prepends <bos>, built in code.

    ``chat=True`` adds the two turn markers as special tokens and a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(_SPECIALS)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    extra = CHAT_SPECIALS if chat else ()
    for token in extra:
        vocab[token] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)]
    )
    if extra:
        from tokenizers import AddedToken

        core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        chat_template=CHAT_TEMPLATE if chat else None,
        additional_special_tokens=list(extra) or None,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        add_bos_token=True,
        name_or_path="probes-byte-chat-tokenizer" if chat else "probes-byte-tokenizer",
    )


def build_tiny_model(spec: str, seed: int = TINY_SEED) -> tuple[Any, Any, str]:
    """Return (hf_model, tokenizer, architecture name for TransformerLens) for a tiny spec."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel

    tokenizer = build_byte_tokenizer()
    vocab_size = len(tokenizer)
    special_ids: dict[str, Any] = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    model: Any
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if spec == "tiny-gemma3":
            gemma_config = Gemma3TextConfig(
                vocab_size=vocab_size,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=1,
                head_dim=16,
                max_position_embeddings=1024,
                sliding_window=32,
                layer_types=["sliding_attention", "full_attention"] * 2,
                architectures=["Gemma3ForCausalLM"],
                **special_ids,
            )
            model, arch = Gemma3ForCausalLM(gemma_config), "google/gemma-3-270m"
        elif spec == "tiny-gpt2":
            gpt2_config = GPT2Config(
                vocab_size=vocab_size,
                n_embd=64,
                n_layer=3,
                n_head=4,
                n_positions=1024,
                architectures=["GPT2LMHeadModel"],
                **special_ids,
            )
            model, arch = GPT2LMHeadModel(gpt2_config), "gpt2"
        else:
            raise ValueError(f"not a tiny spec: {spec}")
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval(), tokenizer, arch
