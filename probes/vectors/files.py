"""Control-vector files: the suite's directions out to llama.cpp (GGUF) and per-layer
safetensors, and such files back in as :class:`~probes.directions.Direction` objects.

The convention, read from llama.cpp's source (``llama_adapter_cvec`` and the Gemma 3 graph):
tensor ``direction.N`` is added, times the ``--control-vector-scaled`` factor, to the output of
decoder block ``N`` (0-based), after its residual additions and before block ``N + 1``: the
suite's ``resid_post`` of block ``N``, which is also ``resid_pre`` of block ``N + 1``. Layer 0
is never applied (llama.cpp refuses ``direction.0``), and there is no slot for the embedding
(``resid_pre`` of block 0) nor for ``attn_out`` / ``mlp_out``. A file's tensor is the whole
edit at scale 1: ``direction.scaled(strength)``, so ``--control-vector-scaled FILE c`` applies
what ``steer(model, direction, c * strength)`` applies. A band of several layers is one file;
directions that land on the same layer are summed, as llama.cpp sums them.

``controlvector.model_hint`` and ``controlvector.layer_count`` (the number of direction
tensors) follow llama.cpp's ``cvector-generator`` and repeng. The suite adds one more key,
``probes.directions`` (JSON), holding the exported directions bit for bit, so that an import
gives back the same :class:`Direction` objects; tools that do not know it ignore it.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from probes.directions import Direction
from probes.errors import ProbesError

ARCH = "controlvector"
META_KEY = "probes.directions"
META_FORMAT = "probes-control-vector"
FORMATS = ("gguf", "safetensors")
# per-layer tensor names other tools use in safetensors files: direction.N, layers.N, layer.N, N
_LAYER_KEY = re.compile(r"^(?:(?:direction|layers?)\.)?(\d+)$")


@dataclass(frozen=True)
class ModelShape:
    """What a control vector must fit: the model family, its depth and its hidden size."""

    model_type: str
    n_layers: int
    d_model: int
    name: str = ""
    fingerprint: str = ""

    @classmethod
    def of(cls, model: Any) -> ModelShape:
        """The shape of a :class:`~probes.models.loading.LoadedModel`."""
        config = model.hf_model.config
        return cls(
            model_type=str(getattr(config, "model_type", "") or ""),
            n_layers=int(model.n_layers),
            d_model=int(model.d_model),
            name=str(model.name),
            fingerprint=str(model.fingerprint),
        )


def model_hint(model_type: str) -> str:
    """llama.cpp's architecture name for a Hugging Face ``model_type`` (``gemma3_text`` ->
    ``gemma3``); what ``controlvector.model_hint`` holds."""
    return model_type.lower().removesuffix("_text")


@dataclass(frozen=True, eq=False)
class ControlVector:
    """Per-layer additions at scale 1: ``layers[N]`` is added to the output of block ``N``.

    ``directions`` are the suite directions the file was exported from (restored from its
    ``probes.directions`` key) or, for a file from another tool, one direction per layer whose
    ``strength`` 1 is the file at scale 1.
    """

    layers: dict[int, Float[Tensor, " d_model"]]
    model_hint: str = ""
    strength: float = 1.0
    directions: tuple[Direction, ...] = ()
    model: dict[str, Any] = field(default_factory=dict)
    source_format: str = ""

    @property
    def d_model(self) -> int:
        sizes = {int(v.numel()) for v in self.layers.values()}
        if len(sizes) != 1:
            raise ProbesError(f"the control vector's layers have different sizes: {sorted(sizes)}")
        return sizes.pop()


def control_layer(direction: Direction, *, lowest: int = 1) -> int:
    """The llama.cpp layer index whose output gets ``direction``'s edit (see module notes).

    ``lowest=0`` allows the output of block 0 (fine in a safetensors file, not in llama.cpp)."""
    if direction.site == "resid_post":
        layer = direction.layer
    elif direction.site == "resid_pre":
        layer = direction.layer - 1
    else:
        raise ProbesError(
            f"a {direction.site} direction has no control-vector slot: llama.cpp adds vectors "
            "to block outputs only (use a resid_post or resid_pre direction)"
        )
    if layer < lowest:
        what = "the embedding" if layer < 0 else "the output of block 0"
        raise ProbesError(
            f"a {direction.site} direction at layer {direction.layer} edits {what}, which "
            + (
                "llama.cpp never applies (its control layers start at 1)"
                if lowest
                else "no control vector can hold"
            )
        )
    return layer


def from_directions(
    directions: Sequence[Direction],
    strength: float,
    shape: ModelShape,
    *,
    for_llama: bool = True,
) -> ControlVector:
    """The control vector that applies ``steer(model, directions, strength)``.

    ``for_llama`` maps layers as llama.cpp does (refusing what it cannot apply); without it
    (safetensors) ``resid_post`` of block 0 is allowed too."""
    if not directions:
        raise ProbesError("a control vector needs at least one direction")
    layers: dict[int, Tensor] = {}
    for d in directions:
        if int(d.vector.numel()) != shape.d_model:
            raise ProbesError(
                f"a direction of size {d.vector.numel()} does not fit {shape.name or 'the model'} "
                f"(hidden size {shape.d_model})"
            )
        if not 0 <= d.layer < shape.n_layers:
            raise ProbesError(
                f"a direction at layer {d.layer} does not fit {shape.name or 'the model'} "
                f"({shape.n_layers} layers)"
            )
        index = control_layer(d, lowest=1 if for_llama else 0)
        edit = d.scaled(strength).float()
        layers[index] = edit if index not in layers else layers[index] + edit
    model = {
        "name": shape.name,
        "model_type": shape.model_type,
        "n_layers": shape.n_layers,
        "d_model": shape.d_model,
        "fingerprint": shape.fingerprint,
    }
    return ControlVector(
        layers=dict(sorted(layers.items())),
        model_hint=model_hint(shape.model_type),
        strength=float(strength),
        directions=tuple(directions),
        model=model,
    )


# --------------------------------------------------------------------------------------------
# the probes.directions key: the exported directions, bit for bit
# --------------------------------------------------------------------------------------------


def _encode_vector(vector: Tensor) -> str:
    array = vector.detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4")
    return base64.b64encode(array.tobytes()).decode("ascii")


def _decode_vector(text: str) -> Tensor:
    array = np.frombuffer(base64.b64decode(text.encode("ascii")), dtype="<f4")
    return torch.from_numpy(array.astype(np.float32))


def _meta_json(cv: ControlVector) -> str:
    rows = [
        {
            "layer": d.layer,
            "site": d.site,
            "method": d.method,
            "attribute": d.attribute,
            "source": d.source,
            "target": d.target,
            "typical_norm": d.typical_norm,
            "meta": d.meta,
            "vector_f32_b64": _encode_vector(d.vector),
        }
        for d in cv.directions
    ]
    payload = {
        "format": META_FORMAT,
        "version": 1,
        "strength": cv.strength,
        "model": cv.model,
        "directions": rows,
    }
    return json.dumps(payload, default=str)


def _restore(text: str, where: str) -> tuple[float, dict[str, Any], tuple[Direction, ...]]:
    try:
        payload = json.loads(text)
        if payload.get("format") != META_FORMAT or payload.get("version") != 1:
            raise ValueError("unknown format or version")
        directions = tuple(
            Direction.from_fields(_decode_vector(row["vector_f32_b64"]), row)
            for row in payload["directions"]
        )
        return float(payload["strength"]), dict(payload.get("model") or {}), directions
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProbesError(f"{where}: its {META_KEY} entry cannot be read ({exc})") from exc


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def gguf_bytes(cv: ControlVector) -> bytes:
    """The llama.cpp control-vector GGUF file of ``cv`` (architecture ``controlvector``)."""
    from gguf import GGUFWriter

    if 0 in cv.layers:
        raise ProbesError("llama.cpp never applies direction.0; a GGUF control vector starts at 1")
    with tempfile.TemporaryDirectory(prefix="probes-cvec-") as tmp:
        path = Path(tmp) / "control.gguf"
        writer = GGUFWriter(path, ARCH)
        writer.add_string(f"{ARCH}.model_hint", cv.model_hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(cv.layers))
        if cv.directions:
            writer.add_string(META_KEY, _meta_json(cv))
        for layer, vector in cv.layers.items():
            writer.add_tensor(f"direction.{layer}", vector.detach().cpu().float().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


def safetensors_bytes(cv: ControlVector) -> bytes:
    """Per-layer safetensors: ``direction.N`` tensors, the same keys in the header metadata."""
    from safetensors.torch import save

    tensors = {
        f"direction.{n}": v.detach().cpu().float().contiguous() for n, v in cv.layers.items()
    }
    metadata = {
        "format": META_FORMAT,
        f"{ARCH}.model_hint": cv.model_hint,
        f"{ARCH}.layer_count": str(len(cv.layers)),
    }
    if cv.directions:
        metadata[META_KEY] = _meta_json(cv)
    return save(tensors, metadata=metadata)


def control_vector_bytes(cv: ControlVector, fmt: str) -> bytes:
    """``cv`` as a ``gguf`` or ``safetensors`` file."""
    if fmt not in FORMATS:
        raise ProbesError(f"unknown control-vector format {fmt!r}; choose from gguf, safetensors")
    return gguf_bytes(cv) if fmt == "gguf" else safetensors_bytes(cv)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _field(reader: Any, key: str) -> Any:
    """A scalar or string GGUF field's value, or None."""
    entry = reader.fields.get(key)
    if entry is None or not entry.data:
        return None
    part = entry.parts[entry.data[0]]
    if part.dtype == np.uint8 and len(entry.types) == 1 and entry.types[0].name == "STRING":
        return bytes(part).decode("utf-8")
    return part.tolist()[0]


def _read_gguf(path: Path) -> tuple[dict[int, Tensor], dict[str, Any]]:
    from gguf import GGMLQuantizationType, GGUFReader

    try:
        reader = GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise ProbesError(f"{path} is not a readable GGUF file ({exc})") from exc
    arch = _field(reader, "general.architecture")
    if arch != ARCH:
        raise ProbesError(f"{path} is a GGUF {arch or 'file'}, not a {ARCH}")
    layers: dict[int, Tensor] = {}
    for tensor in reader.tensors:
        match = re.fullmatch(r"direction\.(\d+)", tensor.name)
        if match is None:
            raise ProbesError(f"{path}: tensor {tensor.name!r} is not named direction.N")
        if tensor.tensor_type != GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise ProbesError(f"{path}: {tensor.name} must be a 1-D F32 tensor, as llama.cpp reads")
        layer = int(match.group(1))
        if layer == 0:
            raise ProbesError(f"{path}: direction.0 is invalid in a llama.cpp control vector")
        vector = torch.from_numpy(np.array(tensor.data, dtype=np.float32).reshape(-1))
        layers[layer] = layers[layer] + vector if layer in layers else vector
    info = {
        "model_hint": _field(reader, f"{ARCH}.model_hint") or "",
        "layer_count": _field(reader, f"{ARCH}.layer_count"),
        "meta": _field(reader, META_KEY),
    }
    return layers, info


def _read_safetensors(path: Path) -> tuple[dict[int, Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    layers: dict[int, Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                match = _LAYER_KEY.fullmatch(key)
                if match is None:
                    raise ProbesError(
                        f"{path}: tensor {key!r} names no layer (expected direction.N, layers.N "
                        "or N)"
                    )
                tensor = handle.get_tensor(key)
                if not tensor.is_floating_point():
                    raise ProbesError(f"{path}: {key} is {tensor.dtype}, not a float tensor")
                squeezed = tensor.reshape(-1) if tensor.numel() == tensor.shape[-1] else None
                if squeezed is None:
                    raise ProbesError(f"{path}: {key} has shape {list(tensor.shape)}, not [d]")
                layers[int(match.group(1))] = squeezed.float()
    except (SafetensorError, OSError) as exc:
        raise ProbesError(f"{path} is not a readable safetensors file ({exc})") from exc
    info = {
        "model_hint": metadata.get(f"{ARCH}.model_hint", ""),
        "layer_count": metadata.get(f"{ARCH}.layer_count"),
        "meta": metadata.get(META_KEY),
    }
    return layers, info


def _plain(
    path: Path, fmt: str, layers: dict[int, Tensor], hint: str, note: str = ""
) -> ControlVector:
    """A file from another tool: one resid_post direction per layer, strength 1 = scale 1."""
    meta = {"file": path.name, "model_hint": hint, **({"note": note} if note else {})}
    directions = tuple(
        Direction(
            vector=vector,
            layer=layer,
            site="resid_post",
            method=f"imported({fmt})",
            typical_norm=float(vector.double().norm()),
            meta=meta,
        )
        for layer, vector in layers.items()
    )
    return ControlVector(layers, hint, 1.0, directions, {}, fmt)


def read_control_vector(path: str | Path) -> ControlVector:
    """Read a GGUF control vector (llama.cpp, repeng, this suite) or a per-layer safetensors file.

    The format is told by the file's first bytes; nothing is unpickled."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ProbesError(f"cannot read {path}: {exc.strerror or exc}") from exc
    fmt = "gguf" if magic == b"GGUF" else "safetensors"
    layers, info = _read_gguf(path) if fmt == "gguf" else _read_safetensors(path)
    if not layers:
        raise ProbesError(f"{path} holds no direction tensors")
    layers = dict(sorted(layers.items()))
    hint = str(info["model_hint"] or "")
    if info["meta"] is None:
        return _plain(path, fmt, layers, hint)
    strength, model, directions = _restore(str(info["meta"]), str(path))
    deepest = max([*layers, *(d.layer for d in directions)])
    d_model = int(layers[max(layers)].numel())
    shape = ModelShape(str(model.get("model_type", "")), deepest + 1, d_model)
    expected = from_directions(directions, strength, shape, for_llama=fmt == "gguf").layers
    same = expected.keys() == layers.keys() and all(
        torch.allclose(expected[n], layers[n], rtol=1e-5, atol=1e-6) for n in layers
    )
    if not same:  # edited by another tool since: the tensors are what llama.cpp would apply
        return _plain(path, fmt, layers, hint, note="tensors differ from its probes.directions")
    return ControlVector(layers, hint, strength, directions, model, fmt)


def check_fits(cv: ControlVector, shape: ModelShape, where: str = "the file") -> None:
    """Refuse, in one line, a control vector written for another model."""
    name = shape.name or "the model"
    if cv.d_model != shape.d_model:
        raise ProbesError(
            f"{where} holds vectors of size {cv.d_model}; {name} has hidden size "
            f"{shape.d_model} (it was made for another model)"
        )
    top = max(cv.layers)
    if top >= shape.n_layers:
        raise ProbesError(
            f"{where} has a vector for layer {top}; {name} has {shape.n_layers} layers "
            "(it was made for another model)"
        )
    written_for = cv.model.get("n_layers")
    if written_for is not None and int(written_for) != shape.n_layers:
        raise ProbesError(
            f"{where} was exported from a model with {written_for} layers; {name} has "
            f"{shape.n_layers}"
        )
    hint, ours = model_hint(cv.model_hint), model_hint(shape.model_type)
    if hint and ours and hint != ours:
        raise ProbesError(f"{where} is a control vector for {cv.model_hint!r}; {name} is {ours!r}")


def write_control_vector(
    path: str | Path,
    directions: Sequence[Direction],
    strength: float,
    model: Any,
    fmt: str = "gguf",
) -> Path:
    """Write ``directions`` at ``strength`` for ``model`` (a LoadedModel or a ModelShape) as a
    ``gguf`` or ``safetensors`` control vector, atomically."""
    from probes.atomic import atomic_write_bytes

    shape = model if isinstance(model, ModelShape) else ModelShape.of(model)
    cv = from_directions(directions, strength, shape, for_llama=fmt == "gguf")
    return atomic_write_bytes(path, control_vector_bytes(cv, fmt))
