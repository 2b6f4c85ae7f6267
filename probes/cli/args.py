"""Options shared by several subcommands: the model to load, and where activation stores are."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probes.errors import ProbesError
from probes.validate import check_dtype, device_arg

if TYPE_CHECKING:
    from probes.cache.store import ActivationStore
    from probes.models.loading import LoadedModel

DEFAULT_MODEL = "gemma-3-270m"
STORE_HELP = "an activation store folder, or a cache root holding one (probes cache --out)"


def add_model_args(
    parser: argparse.ArgumentParser, *, model: bool = True, default: str | None = DEFAULT_MODEL
) -> None:
    """``--model``, ``--device``, ``--dtype`` (the model's dtype), ``--trust-remote-code`` and
    ``--allow-pickle``, the same everywhere; load with :func:`load_model_from_args`.

    ``model=False`` leaves out ``--model`` (for ``probes info SPEC``)."""
    if model:
        parser.add_argument("--model", default=default, help="model spec (default: %(default)s)")
    parser.add_argument(
        "--device", default=None, type=device_arg, help="cpu, cuda, cuda:N (default: auto)"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        type=_dtype_arg,
        help="dtype to run the model in: float32, float16, bfloat16 (default: bfloat16 on "
        "CUDA, float32 on CPU)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a model folder run its own Python code (auto_map); off by default, see "
        "docs/security.md",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="let a model folder's pickle checkpoints (*.bin, *.pt) be loaded when it has no "
        "safetensors; off by default, see docs/security.md",
    )


def _dtype_arg(text: str) -> str:
    try:
        return str(check_dtype(text))
    except ProbesError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def load_model_from_args(
    args: argparse.Namespace, spec: str | None = None, **options: Any
) -> LoadedModel:
    """``load_model`` with the options of :func:`add_model_args` (and any ``options``, e.g.
    :func:`dispatch_options`)."""
    from probes.models.loading import load_model

    return load_model(
        spec or args.model,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        **options,
    )


def add_dispatch_args(parser: argparse.ArgumentParser) -> None:
    """``--device-map``, ``--n-devices``, ``--max-memory`` and ``--offload-folder``: spread a
    model over several devices (accelerate's dispatch, through TransformerBridge)."""
    parser.add_argument(
        "--device-map", default=None, help="auto, balanced, or a JSON object module -> device"
    )
    parser.add_argument("--n-devices", type=int, default=None, help="split over N GPUs")
    parser.add_argument(
        "--max-memory", default=None, help='JSON per-device budget, e.g. {"0": "70GiB"}'
    )
    parser.add_argument("--offload-folder", default=None, help="folder for disk-offloaded weights")


def dispatch_options(args: argparse.Namespace) -> dict[str, Any]:
    """``load_model`` keywords from :func:`add_dispatch_args`' options (JSON read here)."""
    out: dict[str, Any] = {}
    for name in ("device_map", "max_memory"):
        value = getattr(args, name, None)
        if value is not None and value.lstrip().startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ProbesError(f"--{name.replace('_', '-')} is not valid JSON: {exc}") from exc
            if name == "max_memory":
                value = {int(k) if str(k).isdigit() else k: v for k, v in value.items()}
        if value is not None:
            out[name] = value
    if getattr(args, "n_devices", None) is not None:
        out["n_devices"] = args.n_devices
    if getattr(args, "offload_folder", None) is not None:
        out["offload_folder"] = args.offload_folder
    return out


def batch_size_arg(value: str) -> int | str:
    """A positive integer or 'auto' (from the device's free memory)."""
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise argparse.ArgumentTypeError(f"batch size must be a positive integer or auto: {value}")
    return size


def resolve_store(path: str | Path) -> Path:
    """A store folder, or a cache root holding exactly one store (as ``probes cache --out``
    makes): the store's folder. A root with none or several stores is a ProbesError."""
    from probes.cache.store import MANIFEST

    folder = Path(path)
    if (folder / MANIFEST).is_file() or not folder.is_dir():
        return folder  # a store, or nothing: ActivationStore.open says which
    stores = sorted(p for p in folder.iterdir() if (p / MANIFEST).is_file())
    if len(stores) == 1:
        return stores[0]
    if not stores:
        return folder
    names = ", ".join(p.name for p in stores)
    raise ProbesError(
        f"{folder} is a cache root with {len(stores)} stores; pass one of them: {names}"
    )


def open_store(path: str | Path) -> ActivationStore:
    """Open the activation store at ``path`` (a store folder or a root with one store)."""
    from probes.cache.store import ActivationStore

    return ActivationStore.open(resolve_store(path))
