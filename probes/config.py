"""The `probes run` configuration: TOML in, a validated frozen dataclass out.

Every key is optional; unknown keys and wrong types are one-line ConfigErrors. ``--quick``
shrinks the sizes for a first look.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from probes.errors import ConfigError

ALL_STAGES = ("first_look", "probes")
PROBE_ATTRIBUTES = (
    "dialect_us_uk",
    "age",
    "gender",
    "education",
    "socioeconomic",
    "proficiency",
    "belief",
)


@dataclass(frozen=True)
class ProbeStageConfig:
    """Which attributes to probe, on how many examples, where."""

    attributes: tuple[str, ...] = PROBE_ATTRIBUTES
    size: int | None = None  # None: each dataset's default size
    seed: int = 0
    layers: str = "all"
    position: str = "last"
    frame: str = "raw"
    batch_size: int = 16
    folds: int = 5
    C: float = 1.0
    n_boot: int = 1000
    reading_attribute: str | None = "dialect_us_uk"  # also probe at a read-out suffix


@dataclass(frozen=True)
class RunConfig:
    """The whole main job."""

    model: str = "gemma-3-270m"
    device: str | None = None
    dtype: str | None = None
    stages: tuple[str, ...] = ALL_STAGES
    probes: ProbeStageConfig = field(default_factory=ProbeStageConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK_OVERRIDES = {"size": 160, "n_boot": 300}


def _coerce(section: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Check names and types of one TOML table against a dataclass."""
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key}: expected one of {', '.join(known)}")
        default = getattr(cls(), key) if key != "probes" else None
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{section}.{key} must be a list of strings")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{section}.{key} must be true or false")
        elif isinstance(default, int) and not isinstance(default, bool):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{section}.{key} must be a non-negative integer")
        elif isinstance(default, float):
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{section}.{key} must be a positive number")
            value = float(value)
        elif default is None or isinstance(default, str):
            if key == "size" and not (isinstance(value, int) and value > 0):
                raise ConfigError(f"{section}.size must be a positive integer")
            if key != "size" and not isinstance(value, str):
                raise ConfigError(f"{section}.{key} must be a string")
        out[key] = value
    return out


def load_config(
    path: str | Path | None = None, *, quick: bool = False, **overrides: Any
) -> RunConfig:
    """Read a TOML file (optional), apply ``--quick`` and command-line overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    probe_values = raw.pop("probes", {})
    if not isinstance(probe_values, dict):
        raise ConfigError("[probes] must be a table")
    top = _coerce("run", RunConfig, raw.pop("run", {}) | raw)
    probes = ProbeStageConfig(**_coerce("probes", ProbeStageConfig, probe_values))
    if (
        "reading_attribute" not in probe_values
        and probes.reading_attribute not in probes.attributes
    ):
        probes = replace(probes, reading_attribute=None)  # the default only applies when probed
    if quick:
        probes = replace(probes, **QUICK_OVERRIDES)
    config = RunConfig(**top, probes=probes)
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    _validate(config)
    return config


def _validate(config: RunConfig) -> None:
    unknown = [s for s in config.stages if s not in ALL_STAGES]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r}: use {', '.join(ALL_STAGES)}")
    from probes.datasets import list_datasets

    names = {info.name for info in list_datasets()}
    bad = [a for a in config.probes.attributes if a not in names]
    if bad:
        raise ConfigError(f"unknown dataset {bad[0]!r} in probes.attributes")
    if config.probes.position not in ("last", "mean"):
        raise ConfigError("probes.position must be 'last' or 'mean'")
    if config.probes.frame not in ("raw", "chat", "template"):
        raise ConfigError("probes.frame must be raw, chat or template")
    if config.probes.folds < 2:
        raise ConfigError("probes.folds must be at least 2")
    reading = config.probes.reading_attribute
    if reading and reading not in config.probes.attributes:
        raise ConfigError("probes.reading_attribute must be one of probes.attributes")
