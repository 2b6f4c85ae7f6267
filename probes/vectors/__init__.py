"""Deployable edits: steering directions as llama.cpp control vectors (GGUF) and per-layer
safetensors files, out and back in; running them in llama.cpp itself."""

from __future__ import annotations

from probes.vectors.files import (
    FORMATS,
    ControlVector,
    ModelShape,
    check_fits,
    control_layer,
    control_vector_bytes,
    from_directions,
    model_hint,
    read_control_vector,
    write_control_vector,
)

__all__ = [
    "FORMATS",
    "ControlVector",
    "ModelShape",
    "check_fits",
    "control_layer",
    "control_vector_bytes",
    "from_directions",
    "model_hint",
    "read_control_vector",
    "write_control_vector",
]
