"""Activation caches: extraction from a model, the content-addressed on-disk store, and token
positions.
"""

from __future__ import annotations

from probes.cache.extraction import (
    STORE_DTYPES,
    default_cache_root,
    extract,
    extract_dataset,
    fast_attention,
    parse_layers,
    parse_sites,
    prompts_hash,
)
from probes.cache.positions import (
    PositionKind,
    PositionSpec,
    gather_positions,
    parse_position,
    real_token_index,
    selection_weights,
)
from probes.cache.store import (
    MANIFEST,
    PARTIAL,
    SITE_HOOKS,
    SITE_ORDER,
    STORE_FORMAT,
    TABLE,
    ActivationStore,
    StoreWriter,
    describe_difference,
    file_sha256,
    iter_shards,
    read_table,
    request_key,
    tensor_name,
    write_store,
)

__all__ = [
    "MANIFEST",
    "PARTIAL",
    "SITE_HOOKS",
    "SITE_ORDER",
    "STORE_DTYPES",
    "STORE_FORMAT",
    "TABLE",
    "ActivationStore",
    "PositionKind",
    "PositionSpec",
    "StoreWriter",
    "default_cache_root",
    "describe_difference",
    "extract",
    "extract_dataset",
    "fast_attention",
    "file_sha256",
    "gather_positions",
    "iter_shards",
    "parse_layers",
    "parse_position",
    "parse_sites",
    "prompts_hash",
    "read_table",
    "real_token_index",
    "request_key",
    "selection_weights",
    "tensor_name",
    "write_store",
]
