"""Models: loading (embedded Gemma, local folders, tiny test models), tokenised batches, and the
seams to transformers and TransformerLens.
"""

from __future__ import annotations

from probes.models.batching import (
    Batch,
    batch_rows,
    collate,
    current_rows,
    declared_prompt_lengths,
    encode,
    length_sorted_batches,
    pad_token_id,
    prompt_lengths,
)
from probes.models.compat import (
    KNOWN_BROKEN_FROM,
    KV_CACHE_KEYWORDS,
    cached_length,
    check_supported,
    installed_version,
    kv_cache_from,
    route_kv_cache,
)
from probes.models.devices import (
    default_dtype,
    default_store_dtype,
    free_memory_batch_size,
    input_device,
    is_dispatched,
    is_out_of_memory,
    shrinking_batches,
)
from probes.models.embedded_file import embedded_gguf
from probes.models.head import OutputHead, detect_output_head
from probes.models.loading import (
    BUILTIN_SPECS,
    EMBEDDED_ARCH_NAME,
    EMBEDDED_SPEC,
    BuiltinSpec,
    LoadedModel,
    convert_embedded,
    embedded_model_dir,
    is_converted,
    list_models,
    load_model,
    probes_home,
    resolve_device,
    resolve_dtype,
    wrap_hf_model,
)
from probes.models.tiny import (
    TINY_SEED,
    build_byte_tokenizer,
    build_tiny_model,
)

__all__ = [
    "BUILTIN_SPECS",
    "EMBEDDED_ARCH_NAME",
    "EMBEDDED_SPEC",
    "KNOWN_BROKEN_FROM",
    "KV_CACHE_KEYWORDS",
    "TINY_SEED",
    "Batch",
    "BuiltinSpec",
    "LoadedModel",
    "OutputHead",
    "batch_rows",
    "build_byte_tokenizer",
    "build_tiny_model",
    "cached_length",
    "check_supported",
    "collate",
    "convert_embedded",
    "current_rows",
    "declared_prompt_lengths",
    "default_dtype",
    "default_store_dtype",
    "detect_output_head",
    "embedded_gguf",
    "embedded_model_dir",
    "encode",
    "free_memory_batch_size",
    "input_device",
    "installed_version",
    "is_converted",
    "is_dispatched",
    "is_out_of_memory",
    "kv_cache_from",
    "length_sorted_batches",
    "list_models",
    "load_model",
    "pad_token_id",
    "probes_home",
    "prompt_lengths",
    "resolve_device",
    "resolve_dtype",
    "route_kv_cache",
    "shrinking_batches",
    "wrap_hf_model",
]
