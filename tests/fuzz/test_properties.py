"""Property-based tests (hypothesis) of the readers: whatever the bytes, the dataset, config and
policy readers return a value or raise their one-line error, never anything else."""

from __future__ import annotations

import json
import tomllib

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from probes.audit import parse_policy
from probes.datasets import export_dataset, load_dataset
from probes.errors import ConfigError, DatasetError
from probes.pipeline import load_config

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# JSON scalars and small containers, including the awkward ones (NaN, huge ints, surrogates)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(), max_size=12),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=2),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = [
    "text",
    "label",
    "group",
    "id",
    "pair_id",
    "messages",
    "meta",
    "attribute",
    "_probes_dataset",
]


def _one_line(exc: BaseException) -> None:
    assert "\n" not in str(exc), str(exc)
    assert str(exc)


@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_any_bytes_are_a_dataset_or_a_dataset_error(tmp_path, data, suffix):
    path = tmp_path / f"d{suffix}"
    path.write_bytes(data)
    try:
        ds = load_dataset(str(path))
    except DatasetError as exc:
        _one_line(exc)
    else:
        assert len(ds) >= 1 and len(ds.labels) >= 2


@SETTINGS
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(KEYS), values, max_size=5), min_size=1, max_size=6
    )
)
def test_any_json_rows_are_a_dataset_or_a_dataset_error(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows),
        encoding="utf-8",
        errors="surrogatepass",
    )
    try:
        ds = load_dataset(str(path))
    except DatasetError as exc:
        _one_line(exc)
    else:  # what loads, round-trips: export and reload give the same content
        again = load_dataset(str(export_dataset(ds, tmp_path / "again.jsonl")))
        assert again.content_hash() == ds.content_hash()
        for ex in ds:
            ex.user_text.encode("utf-8")  # valid Unicode only


texts = st.lists(
    st.tuples(st.text(alphabet="abc", min_size=1, max_size=6), st.sampled_from(["x", "y"])),
    min_size=2,
    max_size=10,
)


@SETTINGS
@given(rows=texts)
def test_valid_rows_round_trip_through_csv_and_jsonl(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    rows = [*rows, ("z", "x"), ("z", "y")]
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    ds = load_dataset(str(path))
    for suffix in (".csv", ".jsonl"):
        again = load_dataset(str(export_dataset(ds, tmp_path / f"e{suffix}")))
        assert again.content_hash() == ds.content_hash()


config_keys = st.sampled_from(
    [
        "size",
        "folds",
        "C",
        "n_boot",
        "n_perm",
        "layers",
        "strengths",
        "kl_max",
        "max_items",
        "pairs",
        "seed",
        "attributes",
        "mitigation",
        "cases",
        "device",
        "dtype",
        "model",
        "stages",
    ]
)
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-5, max_value=200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.integers()), max_size=3),
)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if value != value
            else (
                "inf"
                if value == float("inf")
                else ("-inf" if value == float("-inf") else repr(value))
            )
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


@SETTINGS
@given(
    table=st.sampled_from(["probes", "interventions", "mediation", "audit"]),
    key=config_keys,
    value=toml_scalars,
)
def test_any_config_value_is_a_config_or_a_config_error(tmp_path, table, key, value):
    path = tmp_path / "c.toml"
    text = f"[{table}]\n{key} = {_toml(value)}\n"
    try:
        tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError):
        assume(False)  # not TOML at all: nothing to say about the config reader
    path.write_text(text)
    try:
        config = load_config(path)
    except ConfigError as exc:
        _one_line(exc)
    else:  # what is accepted is sane
        assert config.probes.folds >= 2 and config.probes.n_boot >= 1
        assert all(s == s and abs(s) != float("inf") for s in config.interventions.strengths)
        assert config.probes.C > 0 and float("inf") != config.probes.C


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_bytes_are_a_config_or_a_config_error(tmp_path, data):
    path = tmp_path / "c.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        _one_line(exc)


@SETTINGS
@given(
    max_shift=toml_scalars,
    kind=st.sampled_from(["utility_drop", "refusal_drop", "nonsense", "5"]),
    maximum=toml_scalars,
    extra=st.sampled_from(
        ["", "require_interval = 1\n", "groups = ['age']\n", "categories = [3]\n"]
    ),
)
def test_any_policy_is_a_policy_or_a_config_error(max_shift, kind, maximum, extra):
    text = (
        f"[tier1]\nmax_shift = {_toml(max_shift)}\n"
        f"[[tier2.rule]]\nkind = {json.dumps(kind)}\nmax = {_toml(maximum)}\n{extra}"
    )
    try:
        policy = parse_policy(text)
    except ConfigError as exc:
        _one_line(exc)
    else:
        assert 0 <= policy.tier1.max_shift < float("inf")
        assert all(0 <= rule.max < float("inf") for rule in policy.rules)


@SETTINGS
@given(data=st.text(max_size=300))
def test_any_text_is_a_policy_or_a_config_error(data):
    try:
        parse_policy(data)
    except ConfigError as exc:
        _one_line(exc)
