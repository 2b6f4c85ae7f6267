"""Activation caches: extraction from a model, the content-addressed on-disk store, and token
positions.
"""

from __future__ import annotations

from probes.cache.budget import TRUNCATE_SIDES, check_lengths, check_memory
from probes.cache.extraction import (
    STORE_DTYPES,
    default_cache_root,
    extract,
    extract_dataset,
    extract_dataset_positions,
    extract_positions,
    fast_attention,
    parse_layers,
    parse_sites,
    prompts_hash,
)
from probes.cache.integrity import (
    MANIFEST,
    PARTIAL,
    STORE_FORMAT,
    TABLE,
    file_sha256,
    manifest_digest,
    read_manifest,
    read_table,
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
    SITE_HOOKS,
    SITE_ORDER,
    ActivationStore,
    StoreWriter,
    describe_difference,
    iter_shards,
    request_key,
    store_identity,
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
    "TRUNCATE_SIDES",
    "ActivationStore",
    "PositionKind",
    "PositionSpec",
    "StoreWriter",
    "check_lengths",
    "check_memory",
    "default_cache_root",
    "describe_difference",
    "extract",
    "extract_dataset",
    "extract_dataset_positions",
    "extract_positions",
    "fast_attention",
    "file_sha256",
    "gather_positions",
    "iter_shards",
    "manifest_digest",
    "parse_layers",
    "parse_position",
    "parse_sites",
    "prompts_hash",
    "read_manifest",
    "read_table",
    "real_token_index",
    "request_key",
    "selection_weights",
    "store_identity",
    "tensor_name",
    "write_store",
]
