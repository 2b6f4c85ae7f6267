"""llama.cpp itself, through llama-cpp-python's C API (the optional ``llama`` extra): load a
GGUF model, apply a control-vector file, and read next-token logits.

llama-cpp-python binds libllama, whose ``llama_set_adapter_cvec`` takes a float buffer; the
``--control-vector-scaled`` file loader lives in llama.cpp's ``common`` library, which is not
bound. :func:`control_buffer` does what that loader does (``direction.N`` x scale goes to rows
``N - 1`` of an ``n_embd x n_layers`` buffer, several tensors for one layer are summed, layer
0 is refused), reading the file with ggml's own GGUF parser from the same build, so the file
is parsed by the engine's code, not by the suite's.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from probes.errors import ProbesError

INSTALL_HINT = "llama-cpp-python is not installed: pip install 'probes[llama]' (builds llama.cpp)"
_GGML_TYPE_F32 = 0


def llama_cpp_module() -> ModuleType:
    """The ``llama_cpp`` module, or a one-line ProbesError saying how to install it."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise ProbesError(INSTALL_HINT) from exc
    return llama_cpp


def _ggml_base(llama_cpp: ModuleType) -> ctypes.CDLL:
    """ggml's base library shipped inside llama-cpp-python (it holds the GGUF parser)."""
    lib_dir = Path(str(llama_cpp.__file__)).parent / "lib"
    names = sorted(lib_dir.glob("libggml-base.*")) or sorted(lib_dir.glob("ggml-base.*"))
    if not names:
        raise ProbesError(f"no libggml-base in {lib_dir}: a llama-cpp-python build without it")
    lib = ctypes.CDLL(str(names[0]))

    class _InitParams(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]

    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _InitParams]
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    signatures: list[tuple[str, list[Any], Any]] = [
        ("gguf_get_n_tensors", [ctypes.c_void_p], ctypes.c_int64),
        ("gguf_get_data_offset", [ctypes.c_void_p], ctypes.c_size_t),
        ("gguf_get_tensor_name", [ctypes.c_void_p, ctypes.c_int64], ctypes.c_char_p),
        ("gguf_get_tensor_type", [ctypes.c_void_p, ctypes.c_int64], ctypes.c_int),
        ("gguf_get_tensor_offset", [ctypes.c_void_p, ctypes.c_int64], ctypes.c_size_t),
        ("gguf_get_tensor_size", [ctypes.c_void_p, ctypes.c_int64], ctypes.c_size_t),
    ]
    for name, argtypes, restype in signatures:
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = restype
    lib._init_params = _InitParams  # type: ignore[attr-defined]
    return lib


def control_buffer(path: str | Path, scale: float, n_embd: int, n_layer: int) -> np.ndarray:
    """The buffer ``--control-vector-scaled path scale`` hands to ``llama_set_adapter_cvec``:
    ``[n_layer - 1, n_embd]`` float32, row ``N - 1`` for layer ``N``."""
    lib = _ggml_base(llama_cpp_module())
    ctx = lib.gguf_init_from_file(str(path).encode(), lib._init_params(True, None))
    if not ctx:
        raise ProbesError(f"llama.cpp's GGUF reader cannot open {path}")
    try:
        base = int(lib.gguf_get_data_offset(ctx))
        entries = []
        for i in range(int(lib.gguf_get_n_tensors(ctx))):
            name = lib.gguf_get_tensor_name(ctx, i).decode()
            match = re.fullmatch(r"direction\.(\d+)", name)
            if match is None or int(match.group(1)) == 0:
                raise ProbesError(f"{path}: llama.cpp refuses tensor {name!r}")
            if lib.gguf_get_tensor_type(ctx, i) != _GGML_TYPE_F32:
                raise ProbesError(f"{path}: llama.cpp refuses non-F32 tensor {name}")
            size = int(lib.gguf_get_tensor_size(ctx, i))
            if size != 4 * n_embd:
                raise ProbesError(f"{path}: {name} has {size // 4} values; the model has {n_embd}")
            entries.append((int(match.group(1)), base + int(lib.gguf_get_tensor_offset(ctx, i))))
    finally:
        lib.gguf_free(ctx)
    buffer = np.zeros((n_layer - 1, n_embd), dtype=np.float32)
    with open(path, "rb") as handle:
        for layer, offset in entries:
            handle.seek(offset)
            values = np.frombuffer(handle.read(4 * n_embd), dtype="<f4")
            if layer < n_layer:  # llama.cpp ignores layers past the model's last
                buffer[layer - 1] += values * np.float32(scale)
    return buffer


class LlamaCppModel:
    """A GGUF model in llama.cpp, scored one prompt at a time on a fresh context per control
    vector (so no cached state or graph carries over between conditions)."""

    def __init__(self, gguf_path: str | Path, *, n_ctx: int = 512, threads: int | None = None):
        self.lib = llama_cpp_module()
        self.path = Path(gguf_path)
        self.n_ctx = n_ctx
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.lib.llama_backend_init()
        self._quiet()
        params = self.lib.llama_model_default_params()
        self.model = self.lib.llama_model_load_from_file(str(self.path).encode(), params)
        if not self.model:
            raise ProbesError(f"llama.cpp cannot load the model {self.path}")
        self.n_embd = int(self.lib.llama_model_n_embd(self.model))
        self.n_layer = int(self.lib.llama_model_n_layer(self.model))
        vocab = self.lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(self.lib.llama_vocab_n_tokens(vocab))

    def _quiet(self) -> None:
        callback = self.lib.llama_log_callback(lambda level, text, data: None)
        self._log_callback = callback  # keep it alive
        self.lib.llama_log_set(callback, ctypes.c_void_p())

    def _context(self, control: np.ndarray | None) -> Any:
        params = self.lib.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = self.n_ctx
        params.n_ubatch = self.n_ctx
        params.n_threads = params.n_threads_batch = self.threads
        ctx = self.lib.llama_init_from_model(self.model, params)
        if not ctx:
            raise ProbesError("llama.cpp could not create a context")
        if control is not None:
            data = np.ascontiguousarray(control, dtype=np.float32)
            pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            status = self.lib.llama_set_adapter_cvec(
                ctx, pointer, data.size, self.n_embd, 1, self.n_layer
            )
            if status != 0:
                self.lib.llama_free(ctx)
                raise ProbesError(f"llama.cpp refused the control vector (status {status})")
        return ctx

    def last_logprobs(
        self, prompts: Sequence[Sequence[int]], control: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """log-softmax of the next-token logits after each token-id prompt (float64)."""
        ctx = self._context(control)
        out = []
        try:
            memory = self.lib.llama_get_memory(ctx)
            for ids in prompts:
                if len(ids) > self.n_ctx:
                    raise ProbesError(f"a prompt of {len(ids)} tokens exceeds n_ctx {self.n_ctx}")
                self.lib.llama_memory_clear(memory, True)
                tokens = (self.lib.llama_token * len(ids))(*ids)
                status = self.lib.llama_decode(ctx, self.lib.llama_batch_get_one(tokens, len(ids)))
                if status != 0:
                    raise ProbesError(f"llama_decode failed with status {status}")
                pointer = self.lib.llama_get_logits_ith(ctx, -1)
                logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).astype(np.float64)
                top = logits.max()
                out.append(logits - top - np.log(np.exp(logits - top).sum()))
        finally:
            self.lib.llama_free(ctx)
        return out

    def close(self) -> None:
        if getattr(self, "model", None):
            self.lib.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> LlamaCppModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
