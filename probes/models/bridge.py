"""Wrap a loaded Hugging Face model in TransformerLens 4's TransformerBridge, offline."""

from __future__ import annotations

from typing import Any

from probes.errors import UnsupportedArchitectureError
from probes.models.compat import route_kv_cache

__all__ = ["boot_bridge"]


def boot_bridge(arch_name: str, hf_model: Any, tokenizer: Any) -> Any:
    """Wrap a loaded HF model in a TransformerBridge without any hub call."""
    import logging

    from transformer_lens.model_bridge import TransformerBridge

    # TransformerLens reloads a tokenizer that does not declare add_bos_token; ours already
    # prepend BOS, so saying so keeps it from reloading (and from looking anything up).
    if tokenizer.bos_token_id is not None:
        ids = tokenizer("a").input_ids
        if ids and ids[0] == tokenizer.bos_token_id:
            tokenizer.init_kwargs["add_bos_token"] = True
    tokenizer.init_kwargs.setdefault("name_or_path", getattr(tokenizer, "name_or_path", "local"))
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        bridge = TransformerBridge.boot_transformers(
            arch_name, hf_model=hf_model, tokenizer=tokenizer
        )
    except ValueError as exc:
        if "architecture" not in str(exc).lower():
            raise
        found = ", ".join(hf_model.config.architectures or [type(hf_model).__name__])
        raise UnsupportedArchitectureError(
            f"architecture {found} is not supported: TransformerLens {_tl_version()}'s "
            "TransformerBridge has no adapter for it"
        ) from exc
    finally:
        logging.getLogger().setLevel(previous)
    route_kv_cache(bridge)
    return bridge


def _tl_version() -> str:
    from probes.models.compat import installed_version

    return installed_version("transformer-lens") or "?"
