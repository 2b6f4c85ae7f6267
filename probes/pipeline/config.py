"""The `probes run` configuration: TOML in, a validated frozen dataclass out.

Every key is optional; unknown keys and wrong types are one-line ConfigErrors. ``--quick``
shrinks the sizes for a first look, and runs the model in bfloat16 on a CPU that multiplies
it natively (``probes.models.devices.quick_dtype``).
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from probes.datasets.builtin import PROBED_DATASETS
from probes.errors import ConfigError
from probes.validate import check_device, check_dtype, config_float

ALL_STAGES = (
    "first_look",
    "probes",
    "transfer",
    "steering",
    "patching",
    "erasure",
    "mediation",
    "audit",
    "readers",
)
MEDIATION_CASES = ("dialect", "proficiency", "echo_chamber")
PROBE_ATTRIBUTES = PROBED_DATASETS


@dataclass(frozen=True)
class ProbeStageConfig:
    """Which attributes to probe, on how many examples, where."""

    attributes: tuple[str, ...] = PROBE_ATTRIBUTES
    size: int | None = None  # None: each dataset's default size
    seed: int = 0
    layers: str = "all"  # or "0,4,8", "6-12", "0-17:3", or "sparse" (every third and the last)
    position: str = "last"
    frame: str = "raw"
    batch_size: int = 16
    folds: int = 5
    C: float = 1.0
    n_boot: int = 1000
    # Also probe this attribute at a read-out suffix, on the probes stage's set and frame (one
    # more pass over it). Off by default: the readers stage fits both TalkTuner probes for
    # every attribute from one chat-frame pass and draws their curves (figures/reader_*.png).
    reading_attribute: str | None = None
    workers: int = 1  # >1: extract on a Ray actor pool (pip install -e ".[ray]")
    ray_address: str | None = None  # an existing Ray cluster; None starts one on this machine


@dataclass(frozen=True)
class TransferStageConfig:
    """Settings chosen on other styles, then transfer to the held-out corpus (per attribute).

    Training styles: the templated set, the conversation set (``conversation_size`` chats) and
    any ``train_files`` ("attribute=path.jsonl"); the hand-written chatty corpus and the
    conversation set are the validation styles. Position, frame, C and layer are chosen by
    leave-one-style-out; the test is the hand-written held-out corpus."""

    # The grid of read-out positions ("last", "mean", "suffix") and frames ("raw", "chat",
    # "template"). "last" and "mean" read the same tokens, so they share one forward pass (the
    # probes stage extracts the templated sets at both); a suffix or another frame re-extracts
    # every style, the 600-row templated set included (beyond the default run's budget).
    attributes: tuple[str, ...] = ()  # which probed attributes (empty: every one)
    positions: tuple[str, ...] = ("last", "mean")
    frames: tuple[str, ...] = ("raw",)
    Cs: tuple[float, ...] = (0.1, 1.0, 10.0)
    conversation_size: int = 48
    template_size: int | None = None  # None: the probes stage's size (its stores are reused)
    train_files: tuple[str, ...] = ()  # "age=my_chats.jsonl": more training text of a style
    label_map: tuple[str, ...] = ()  # "older adult=older_adult"
    readout: bool = True  # does the probe's reading predict the tailoring (behaviour items)?
    n_boot: int = 1000


@dataclass(frozen=True)
class InterventionStageConfig:
    """Steering sweep, patching and erasure for one behaviour attribute."""

    attribute: str = "dialect"
    method: str = "mean_diff"
    # "auto-small": 60% and 80% of the depth (11 and 14 of 18); "auto" adds 40% (7, where the
    # dialect direction breaks the model before it steers: `probes steer` sweeps it); "3,6,9"
    layers: str = "auto-small"
    strengths: tuple[float, ...] = (-0.2, -0.1, 0.1, 0.2)
    kl_max: float = 0.5
    patch_layers: str = "auto"  # "auto": every 3rd layer and the last (fractions of depth); "all"
    erase_layer: str = "auto"  # "auto": the steering layer with the best in-bounds flip rate
    erase_band: int = 4
    erase_test_rows: int | None = None  # fresh-probe rows after erasure (None: all held-out rows)
    # perplexity of neutral text and greedy samples under the chosen steering (`probes steer`
    # reports both; off in the run, which measures damage as KL in every cell, for its budget)
    damage_and_samples: bool = False


@dataclass(frozen=True)
class MediationStageConfig:
    """The IP paper's three case studies as mediation analyses."""

    cases: tuple[str, ...] = ("dialect", "proficiency", "echo_chamber")
    layers: str = "auto"  # "auto": 1/3, 1/2, 2/3, 5/6 of the depth and the last layer
    pairs: int | None = 12  # twin pairs per case (None: all)
    n_boot: int = 1000
    n_perm: int = 1000


@dataclass(frozen=True)
class AuditStageConfig:
    """The persona audit and its three-tier report."""

    max_items: int | None = 16  # per item set, category-balanced; None: all 159 + 80 items
    policy: str | None = None  # a TOML policy file (tier 2)
    mitigation: bool = True  # re-score with the persona directions ablated (resumed: ~1.45x cost)
    n_boot: int = 1000
    n_perm: int = 1000


@dataclass(frozen=True)
class ReadersStageConfig:
    """The dashboard's reader bundle, fitted (or reused from the cache) into the run folder."""

    attributes: tuple[str, ...] = ()  # which probed attributes (empty: every one)
    size: int | None = None  # examples per attribute (None: the probes stage's, else 128)


@dataclass(frozen=True)
class RunConfig:
    """The whole main job."""

    model: str = "gemma-3-270m"
    device: str | None = None
    dtype: str | None = None
    stages: tuple[str, ...] = ALL_STAGES
    probes: ProbeStageConfig = field(default_factory=ProbeStageConfig)
    transfer: TransferStageConfig = field(default_factory=TransferStageConfig)
    interventions: InterventionStageConfig = field(default_factory=InterventionStageConfig)
    mediation: MediationStageConfig = field(default_factory=MediationStageConfig)
    audit: AuditStageConfig = field(default_factory=AuditStageConfig)
    readers: ReadersStageConfig = field(default_factory=ReadersStageConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK_OVERRIDES = {
    "size": 128,
    "n_boot": 300,
    "layers": "sparse",
    "folds": 3,
    "reading_attribute": None,
}
# --quick transfers dialect only (with its read-out correlation): the held-out corpora of
# six attributes alone are about 23k tokens, more than --quick's 3-minute budget can hold.
QUICK_TRANSFER = {"attributes": ("dialect_us_uk",), "conversation_size": 24, "n_boot": 300}
QUICK_INTERVENTIONS = {
    "strengths": (-0.2, 0.2),
    "layers": "auto-tiny",
    "patch_layers": "auto-tiny",
    "erase_band": 2,
    "erase_test_rows": 120,
    "damage_and_samples": False,
}
QUICK_MEDIATION = {"n_boot": 300, "n_perm": 1000, "layers": "auto-tiny", "pairs": 6}
QUICK_AUDIT = {"max_items": 4, "n_boot": 300, "n_perm": 300, "mitigation": False}
# --quick fits the dialect reader only (the others are two chat-frame passes each).
QUICK_READERS = {"attributes": ("dialect_us_uk",)}
SECTIONS = {
    "probes": ProbeStageConfig,
    "transfer": TransferStageConfig,
    "interventions": InterventionStageConfig,
    "mediation": MediationStageConfig,
    "audit": AuditStageConfig,
    "readers": ReadersStageConfig,
}


def _coerce(section: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Check names and types of one TOML table against a dataclass."""
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key}: expected one of {', '.join(known)}")
        default = getattr(cls(), key) if key not in SECTIONS else None
        if isinstance(default, tuple) and default and isinstance(default[0], float):
            if not isinstance(value, list):
                raise ConfigError(f"{section}.{key} must be a list of numbers")
            value = tuple(config_float(f"each of {section}.{key}", v) for v in value)
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{section}.{key} must be a list of strings")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{section}.{key} must be true or false")
        elif isinstance(default, int) and not isinstance(default, bool):
            least = 0 if key == "seed" else 1  # counts (resamples, folds, batch) start at 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                what = "a non-negative" if least == 0 else "a positive"
                raise ConfigError(f"{section}.{key} must be {what} integer, got {value!r}")
        elif isinstance(default, float):
            value = config_float(f"{section}.{key}", value, positive=True)
        elif default is None or isinstance(default, str):
            counts = ("size", "max_items", "pairs", "erase_test_rows", "template_size")
            positive = isinstance(value, int) and not isinstance(value, bool) and value > 0
            if key in counts and not positive:
                raise ConfigError(f"{section}.{key} must be a positive integer")
            if key not in counts and not isinstance(value, str):
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
        raw = read_toml(path, "config file")
    tables: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        tables[name] = raw.pop(name, {})
        if not isinstance(tables[name], dict):
            raise ConfigError(f"[{name}] must be a table")
    probe_values = tables["probes"]
    if not isinstance(raw.get("run", {}), dict):
        raise ConfigError("[run] must be a table")
    top = _coerce("run", RunConfig, raw.pop("run", {}) | raw)
    probes = ProbeStageConfig(**_coerce("probes", ProbeStageConfig, probe_values))
    sections: dict[str, Any] = {
        name: cls(**_coerce(name, cls, tables[name]))
        for name, cls in SECTIONS.items()
        if name != "probes"
    }
    if (
        "reading_attribute" not in probe_values
        and probes.reading_attribute not in probes.attributes
    ):
        probes = replace(probes, reading_attribute=None)  # the default only applies when probed
    if quick:  # a config's own values win over --quick's sizes
        quick_sizes: dict[str, Any] = {
            k: v for k, v in QUICK_OVERRIDES.items() if k not in probe_values
        }
        probes = replace(probes, **quick_sizes)
        for name, values in (
            ("transfer", QUICK_TRANSFER),
            ("interventions", QUICK_INTERVENTIONS),
            ("mediation", QUICK_MEDIATION),
            ("audit", QUICK_AUDIT),
            ("readers", QUICK_READERS),
        ):
            given = tables[name]
            sections[name] = replace(
                sections[name], **{k: v for k, v in values.items() if k not in given}
            )
    config = RunConfig(**top, probes=probes, **sections)
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    _validate(config)
    if quick and config.dtype is None:  # neither the config nor --dtype chose one
        from probes.models.devices import quick_dtype
        from probes.models.loading import resolve_device

        config = replace(config, dtype=quick_dtype(resolve_device(config.device)))
    if "folds" in probe_values:
        _check_folds(config.probes)
    return config


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; unreadable, non-UTF-8, invalid or too deeply nested is one line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} {path} is nested too deeply to read") from None


def _check_folds(probes: ProbeStageConfig) -> None:
    """Folds are grouped by template family: asking for more than a dataset has is refused."""
    from probes.datasets.builtin import family_count

    for name in probes.attributes:
        families = family_count(name)
        if families >= 2 and probes.folds > families:
            raise ConfigError(
                f"probes.folds = {probes.folds} is more than the {families} template families "
                f"of {name} (folds are grouped by family): use {families} or fewer"
            )


def _validate(config: RunConfig) -> None:
    check_device(config.device, ConfigError)
    check_dtype(config.dtype, ConfigError)
    if not isinstance(config.model, str) or not config.model:
        raise ConfigError("model must be a model spec (a string)")
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
    if config.probes.workers < 1:
        raise ConfigError("probes.workers must be at least 1")
    if config.probes.folds < 2:
        raise ConfigError("probes.folds must be at least 2")
    _validate_transfer(config.transfer)
    if any(a not in PROBE_ATTRIBUTES for a in config.readers.attributes):
        raise ConfigError(f"readers.attributes must be among {', '.join(PROBE_ATTRIBUTES)}")
    steer = config.interventions
    if steer.attribute not in ("dialect", "belief"):
        raise ConfigError("interventions.attribute must be dialect or belief")
    if steer.method not in ("mean_diff", "probe", "twin_pca"):
        raise ConfigError("interventions.method must be mean_diff, probe or twin_pca")
    if not steer.strengths or 0.0 in steer.strengths:
        raise ConfigError("interventions.strengths must be non-empty and non-zero")
    bad_cases = [c for c in config.mediation.cases if c not in MEDIATION_CASES]
    if bad_cases:
        raise ConfigError(
            f"unknown mediation case {bad_cases[0]!r}: use {', '.join(MEDIATION_CASES)}"
        )
    if config.audit.policy is not None and not Path(config.audit.policy).is_file():
        raise ConfigError(f"audit.policy file {config.audit.policy} does not exist")
    reading = config.probes.reading_attribute
    if reading and reading not in config.probes.attributes:
        raise ConfigError("probes.reading_attribute must be one of probes.attributes")


def _validate_transfer(cfg: TransferStageConfig) -> None:
    from probes.datasets.labels import parse_label_map

    if any(a not in PROBE_ATTRIBUTES for a in cfg.attributes):
        raise ConfigError(f"transfer.attributes must be among {', '.join(PROBE_ATTRIBUTES)}")
    bad = [p for p in cfg.positions if p not in ("last", "mean", "suffix")]
    if bad or not cfg.positions:
        raise ConfigError("transfer.positions must list last, mean or suffix")
    if not cfg.frames or any(f not in ("raw", "chat", "template") for f in cfg.frames):
        raise ConfigError("transfer.frames must list raw, chat or template")
    if not cfg.Cs:
        raise ConfigError("transfer.Cs must list at least one positive number")
    for item in cfg.train_files:
        _, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise ConfigError(f"transfer.train_files takes attribute=path to a file, got {item!r}")
    try:
        parse_label_map(cfg.label_map)
    except Exception as exc:  # DatasetError: one line, as a config error
        raise ConfigError(f"transfer.label_map: {exc}") from None
