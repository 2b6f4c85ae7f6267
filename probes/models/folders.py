"""What a local model folder may make the suite do: refuse its own code and pickle weights.

Nothing from a model folder runs as code unless the user says so (``trust_remote_code``), and
nothing is unpickled unless the user says so (``allow_pickle``); see docs/security.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from probes.errors import ModelNotFoundError

__all__ = ["PICKLE_SUFFIXES", "check_model_folder"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def _read_json_object(path: Path, folder: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = getattr(exc, "msg", None) or type(exc).__name__
        raise ModelNotFoundError(f"{path} is not readable JSON ({reason})") from None
    if not isinstance(value, dict):
        raise ModelNotFoundError(f"{path} is not a JSON object")
    return value


def check_model_folder(folder: Path, trust_remote_code: bool, allow_pickle: bool) -> bool:
    """Refuse a folder that would run its own code or unpickle, unless allowed; True when only
    its safetensors weights should be read."""
    config = _read_json_object(folder / "config.json", folder)
    tokenizer_config = folder / "tokenizer_config.json"
    tok = _read_json_object(tokenizer_config, folder) if tokenizer_config.is_file() else {}
    code = sorted(p.name for p in folder.glob("*.py"))
    configs = (("config.json", config), (tokenizer_config.name, tok))
    needs_code = [name for name, values in configs if "auto_map" in values]
    if (needs_code or code) and not trust_remote_code:
        what = f"auto_map in {needs_code[0]}" if needs_code else f"Python files ({code[0]})"
        raise ModelNotFoundError(
            f"model folder {folder} needs its own code ({what}); it is never run unless you "
            "pass --trust-remote-code (load_model(..., trust_remote_code=True))"
        )
    files = [p for p in folder.rglob("*") if p.is_file()]
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    pickles = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
    if not safetensors and pickles and not allow_pickle:
        raise ModelNotFoundError(
            f"model folder {folder} holds only pickle weights ({pickles[0]}), which can run "
            "code when loaded: convert them to safetensors, or pass --allow-pickle "
            "(load_model(..., allow_pickle=True))"
        )
    return bool(safetensors) or not allow_pickle
