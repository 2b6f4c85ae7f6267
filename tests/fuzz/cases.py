"""The table of hostile-but-fair inputs: every subcommand and the Python API.

Each case must end with exit code 2, exactly one line on stderr, no traceback, and no new or
changed file (outside the paths it names in ``changes``). ``kind`` is the issue's class.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.assets import Assets, copy_store, edit_json
from tests.fuzz.runner import Case, enospc

TINY = ("--model", "tiny-gemma3", "--device", "cpu")
GPT2 = ("--model", "tiny-gpt2", "--device", "cpu")


def _write(name: str, text: str | bytes) -> Any:
    def setup(work: Path, assets: Assets) -> None:
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")

    return setup


def _rows(n: int = 8, text: str = "hello there", **extra: Any) -> str:
    rows = [
        json.dumps({"text": f"{text} {i}", "label": "ab"[i % 2], "group": f"g{i % 4}", **extra})
        for i in range(n)
    ]
    return "\n".join(rows) + "\n"


GOOD_ROWS = _rows()


# -- class 1: code and pickles from a model folder ------------------------------------------------


def _remote_code_folder(work: Path, assets: Assets) -> None:
    folder = shutil.copytree(assets.model_dir, work / "remote")
    edit_json(
        folder / "config.json",
        lambda c: c.update(
            auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
        ),
    )
    (folder / "evil.py").write_text(
        "from pathlib import Path\n"
        "Path(__file__).with_name('PWNED').write_text('ran')\n"
        "from transformers import GPT2Config as EvilConfig, GPT2LMHeadModel as EvilModel\n"
    )


def _pickle_folder(name: str) -> Any:
    def setup(work: Path, assets: Assets) -> None:
        import torch
        from safetensors.torch import load_file

        folder = shutil.copytree(assets.model_dir, work / "pickled")
        state = load_file(folder / "model.safetensors")
        (folder / "model.safetensors").unlink()
        torch.save(state, folder / name)

    return setup


# -- class 2: stores and artefacts ---------------------------------------------------------------


def _store_edit(edit: Any, target: str = "manifest.json", src: str = "store") -> Any:
    def setup(work: Path, assets: Assets) -> None:
        store = copy_store(getattr(assets, src), work / "s")
        path = store / target
        if callable(edit):
            edit(path)
        else:
            path.write_text(edit)

    return setup


def _manifest(change: Any) -> Any:
    return _store_edit(lambda path: edit_json(path, change))


def _relabel(path: Path) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row["label"] = "us" if row["label"] != "us" else "uk"
    lines[0] = json.dumps(row, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")


def _drop_row(path: Path) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1:]) + "\n")


def _truncate_shard(work: Path, assets: Assets) -> None:
    store = copy_store(assets.store, work / "s")
    shard = next(store.glob("shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-64])


def _narrow_store(work: Path, assets: Assets) -> None:

    from probes.cache.store import ActivationStore, write_store

    src = ActivationStore.open(assets.store)
    acts = src.stack()[..., :32].contiguous()
    write_store(work / "narrow", {"resid_post": acts}, src.table, layers=src.layers)


def _direction_copy(edit: Any) -> Any:
    def setup(work: Path, assets: Assets) -> None:
        stem = assets.direction
        for suffix in (".json", ".safetensors"):
            shutil.copy(f"{stem}{suffix}", work / f"d{suffix}")
        edit(work)

    return setup


def _wide_direction(work: Path, assets: Assets) -> None:
    import torch

    from probes.directions import Direction

    Direction(vector=torch.ones(48), layer=1, typical_norm=1.0).save(work / "d")


def _deep_direction(work: Path, assets: Assets) -> None:
    import torch

    from probes.directions import Direction

    Direction(vector=torch.ones(64), layer=40, typical_norm=1.0).save(work / "d")


def _api_steer_wide(work: Path, assets: Assets) -> None:
    import torch

    from probes.behavior.scoring import greedy_continuations
    from probes.directions import Direction
    from probes.interventions import steer

    direction = Direction(vector=torch.ones(48), layer=1)
    with steer(assets.gemma, direction, 1.0):
        greedy_continuations(assets.gemma, ["hello"], 2)


def _api_erase_wide(work: Path, assets: Assets) -> None:
    import torch

    from probes.behavior.scoring import greedy_continuations
    from probes.directions import Eraser
    from probes.interventions import erase

    eraser = Eraser(torch.zeros(32, 1), torch.zeros(1, 32), torch.zeros(32), layer=1)
    with erase(assets.gemma, eraser):
        greedy_continuations(assets.gemma, ["hello"], 2)


def _api_transfer_models(work: Path, assets: Assets) -> None:
    from probes.cache.store import ActivationStore
    from probes.probing import transfer

    transfer(ActivationStore.open(assets.store), ActivationStore.open(assets.store_gpt2), n_boot=10)


def _api_open_edited(work: Path, assets: Assets) -> None:
    from probes.cache.store import ActivationStore

    ActivationStore.open(work / "s").stack()


# -- class 3: the filesystem ---------------------------------------------------------------------


def _file(name: str = "taken") -> Any:
    return _write(name, "the user's own file\n")


def _eacces_mkstemp(mp: pytest.MonkeyPatch, work: Path) -> None:
    import probes.atomic

    def deny(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(kwargs.get("dir", "")))

    mp.setattr(probes.atomic.tempfile, "mkstemp", deny)


def _enospc_fsync(mp: pytest.MonkeyPatch, work: Path) -> None:
    import probes.atomic

    mp.setattr(probes.atomic.os, "fsync", enospc)


# -- class 4: inputs the model cannot take -------------------------------------------------------

LONG_ROWS = _rows(4, text="x" * 1100)  # longer than the tiny models' 1024-token context


def _small_memory(mp: pytest.MonkeyPatch, work: Path) -> None:
    """A machine with 256 MiB available (the check reads MemAvailable)."""
    mp.setattr("probes.cache.budget.available_memory", lambda: 2**28)


def _api_extract_long(work: Path, assets: Assets) -> None:
    from probes.cache.extraction import extract

    extract(assets.gpt2, ["y" * 1500, "short"], cache_root=work / "cache", progress=False)


# -- class 5: values -----------------------------------------------------------------------------


def _api(fn: str, *args: Any, **kwargs: Any) -> Any:
    def call(work: Path, assets: Assets) -> None:
        module, name = fn.rsplit(".", 1)
        import importlib

        target = getattr(importlib.import_module(module), name)
        resolved = [a(work, assets) if callable(a) else a for a in args]
        named = {k: v(work, assets) if callable(v) else v for k, v in kwargs.items()}
        target(*resolved, **named)

    return call


def _model(attr: str) -> Any:
    return lambda work, assets: getattr(assets, attr)


def _opened(attr: str) -> Any:
    def get(work: Path, assets: Assets) -> Any:
        from probes.cache.store import ActivationStore

        return ActivationStore.open(getattr(assets, attr))

    return get


def _path(name: str) -> Any:
    return lambda work, assets: work / name


def _cfg(text: str) -> Any:
    """A run config that, were it accepted, would run only the cheap first stage."""
    return _write("c.toml", "stages = ['first_look']\n" + text)


NESTED_TOML = "x = " + "[" * 5000 + "]" * 5000 + "\n"
RUN = ("run", "--model", "tiny-gemma3", "--out", "{w}/run")  # the config says the device


CASES: list[Case] = [
    # ---- 1: code from a model folder -------------------------------------------------------
    Case(
        "info-remote-code",
        "code",
        ("info", "{w}/remote", "--device", "cpu"),
        setup=_remote_code_folder,
    ),
    Case(
        "cache-remote-code",
        "code",
        (
            "cache",
            "--model",
            "{w}/remote",
            "--dataset",
            "dialect_us_uk",
            "--size",
            "8",
            "--out",
            "{w}/c",
        ),
        setup=_remote_code_folder,
    ),
    Case(
        "api-load-remote-code",
        "code",
        call=_api("probes.models.loading.load_model", _path("remote")),
        setup=_remote_code_folder,
    ),
    Case(
        "info-pickle-bin",
        "code",
        ("info", "{w}/pickled", "--device", "cpu"),
        setup=_pickle_folder("pytorch_model.bin"),
    ),
    Case(
        "info-pickle-pt",
        "code",
        ("info", "{w}/pickled", "--device", "cpu"),
        setup=_pickle_folder("model.pt"),
    ),
    Case(
        "generate-pickle-bin",
        "code",
        ("generate", "--model", "{w}/pickled", "hi"),
        setup=_pickle_folder("pytorch_model.bin"),
    ),
    Case(
        "api-load-pickle",
        "code",
        call=_api("probes.models.loading.load_model", _path("pickled")),
        setup=_pickle_folder("pytorch_model.bin"),
    ),
    Case(
        "info-bad-config-json",
        "code",
        ("info", "{w}/m"),
        setup=_write("m/config.json", "{not json"),
    ),
    Case("info-config-list", "code", ("info", "{w}/m"), setup=_write("m/config.json", "[1, 2]")),
    # ---- 2: stores and artefacts -----------------------------------------------------------
    Case(
        "probe-manifest-fingerprint",
        "store",
        ("probe", "--store", "{w}/s", "--out", "{w}/o", "--n-boot", "10"),
        setup=_manifest(lambda m: m["request"]["model"].update(fingerprint="0123456789abcdef")),
    ),
    Case(
        "probe-manifest-layers",
        "store",
        ("probe", "--store", "{w}/s", "--out", "{w}/o", "--n-boot", "10"),
        setup=_manifest(lambda m: m["request"].update(layers=[0, 1, 2, 9])),
    ),
    Case(
        "probe-manifest-rows",
        "store",
        ("probe", "--store", "{w}/s", "--out", "{w}/o", "--n-boot", "10"),
        setup=_manifest(lambda m: m["request"].update(n_rows=20)),
    ),
    Case(
        "probe-manifest-list",
        "store",
        ("probe", "--store", "{w}/s", "--out", "{w}/o"),
        setup=_store_edit("[1, 2, 3]"),
    ),
    Case(
        "probe-manifest-no-request",
        "store",
        ("probe", "--store", "{w}/s", "--out", "{w}/o"),
        setup=_manifest(lambda m: m.pop("request")),
    ),
    Case(
        "probe-manifest-not-json",
        "store",
        ("probe", "--store", "{w}/s", "--out", "{w}/o"),
        setup=_store_edit("{oops"),
    ),
    Case(
        "probe-table-relabelled",
        "store",
        ("probe", "--store", "{w}/s", "--out", "{w}/o", "--n-boot", "10"),
        setup=_store_edit(_relabel, "table.jsonl"),
    ),
    Case(
        "probe-table-row-dropped",
        "store",
        ("probe", "--store", "{w}/s", "--out", "{w}/o", "--n-boot", "10"),
        setup=_store_edit(_drop_row, "table.jsonl"),
    ),
    Case(
        "probe-table-not-json",
        "store",
        ("probe", "--store", "{w}/s", "--out", "{w}/o"),
        setup=_store_edit("{\n", "table.jsonl"),
    ),
    Case(
        "probe-shard-truncated",
        "store",
        ("probe", "--store", "{w}/s", "--out", "{w}/o"),
        setup=_truncate_shard,
    ),
    Case(
        "transfer-across-models",
        "store",
        ("transfer", "--train", "{store}", "--test", "{store_gpt2}", "--out", "{w}/o"),
    ),
    Case(
        "transfer-across-attributes",
        "store",
        ("transfer", "--train", "{store}", "--test", "{store_age}", "--out", "{w}/o"),
    ),
    Case(
        "transfer-across-widths",
        "store",
        ("transfer", "--train", "{store}", "--test", "{w}/narrow", "--out", "{w}/o"),
        setup=_narrow_store,
    ),
    Case(
        "transfer-edited-test-table",
        "store",
        ("transfer", "--train", "{store}", "--test", "{w}/s", "--out", "{w}/o"),
        setup=_store_edit(_relabel, "table.jsonl"),
    ),
    Case(
        "cache-hit-edited-table",
        "store",
        ("cache", *TINY, "--dataset", "dialect_us_uk", "--size", "24", "--out", "{w}/root"),
        setup=lambda w, a: (
            (
                shutil.copytree(a.store.parent, w / "root"),
                _relabel(next((w / "root").glob("*/table.jsonl"))),
            )[0]
            and None
        ),
    ),
    Case(
        "api-open-edited-manifest",
        "store",
        call=_api_open_edited,
        setup=_manifest(lambda m: m["request"].update(n_rows=23)),
    ),
    Case("api-transfer-across-models", "store", call=_api_transfer_models),
    Case(
        "generate-direction-wide",
        "store",
        ("generate", *TINY, "--steer", "{w}/d", "hi"),
        setup=_wide_direction,
    ),
    Case(
        "generate-direction-deep",
        "store",
        ("generate", *TINY, "--steer", "{w}/d", "hi"),
        setup=_deep_direction,
    ),
    Case(
        "generate-direction-no-layer",
        "store",
        ("generate", *TINY, "--steer", "{w}/d", "hi"),
        setup=_direction_copy(lambda w: edit_json(w / "d.json", lambda m: m.pop("layer"))),
    ),
    Case(
        "generate-direction-json-list",
        "store",
        ("generate", *TINY, "--steer", "{w}/d", "hi"),
        setup=_direction_copy(lambda w: (w / "d.json").write_text("[]")),
    ),
    Case(
        "generate-direction-tampered",
        "store",
        ("generate", *TINY, "--steer", "{w}/d", "hi"),
        setup=_direction_copy(
            lambda w: (w / "d.safetensors").write_bytes(
                (w / "d.safetensors").read_bytes()[:-4] + b"\0\0\0\0"
            )
        ),
    ),
    Case(
        "mediate-direction-wide",
        "store",
        (
            "mediate",
            *TINY,
            "--dataset",
            "dialect",
            "--direction",
            "{w}/d",
            "--out",
            "{w}/o",
            "--pairs",
            "2",
            "--n-boot",
            "10",
            "--n-perm",
            "10",
        ),
        setup=_wide_direction,
    ),
    Case("api-steer-wide", "store", call=_api_steer_wide),
    Case("api-erase-wide", "store", call=_api_erase_wide),
    # ---- 3: the filesystem -----------------------------------------------------------------
    Case(
        "export-out-under-file",
        "fs",
        ("datasets", "export", "dialect_us_uk", "--out", "{w}/taken/x.jsonl"),
        setup=_file(),
    ),
    Case(
        "export-out-is-dir",
        "fs",
        ("datasets", "export", "dialect_us_uk", "--out", "{w}/d.jsonl"),
        setup=lambda w, a: (w / "d.jsonl").mkdir(),
    ),
    Case(
        "export-enospc",
        "fs",
        ("datasets", "export", "dialect_us_uk", "--out", "{w}/x.jsonl"),
        patch=_enospc_fsync,
    ),
    Case(
        "export-enospc-keeps-file",
        "fs",
        ("datasets", "export", "dialect_us_uk", "--out", "{w}/taken.jsonl"),
        setup=_file("taken.jsonl"),
        patch=_enospc_fsync,
    ),
    Case(
        "export-eacces",
        "fs",
        ("datasets", "export", "dialect_us_uk", "--out", "{w}/x.jsonl"),
        patch=_eacces_mkstemp,
    ),
    Case(
        "export-proc",
        "fs",
        ("datasets", "export", "dialect_us_uk", "--out", "/proc/probes-fuzz/x.jsonl"),
    ),
    Case(
        "probe-out-is-file",
        "fs",
        ("probe", "--store", "{store}", "--out", "{w}/taken", "--n-boot", "10"),
        setup=_file(),
    ),
    Case(
        "probe-out-enospc",
        "fs",
        ("probe", "--store", "{store}", "--out", "{w}/o", "--n-boot", "10", "--no-bow"),
        patch=_enospc_fsync,
        changes=("o",),
    ),
    Case(
        "transfer-out-is-file",
        "fs",
        ("transfer", "--train", "{store}", "--test", "{store}", "--out", "{w}/taken"),
        setup=_file(),
    ),
    Case(
        "cache-out-is-file",
        "fs",
        ("cache", *TINY, "--dataset", "dialect_us_uk", "--size", "8", "--out", "{w}/taken"),
        setup=_file(),
    ),
    Case(
        "cache-out-proc",
        "fs",
        ("cache", *TINY, "--dataset", "dialect_us_uk", "--size", "8", "--out", "/proc/probes-fuzz"),
    ),
    Case(
        "audit-out-is-file",
        "fs",
        ("audit", *TINY, "--out", "{w}/taken", "--max-items", "2"),
        setup=_file(),
    ),
    Case("run-out-is-file", "fs", ("run", *TINY, "--out", "{w}/taken", "--quick"), setup=_file()),
    Case("steer-out-is-file", "fs", ("steer", *TINY, "--out", "{w}/taken"), setup=_file()),
    Case("patch-out-is-file", "fs", ("patch", *TINY, "--out", "{w}/taken"), setup=_file()),
    Case(
        "mediate-out-is-file",
        "fs",
        ("mediate", *TINY, "--dataset", "dialect", "--out", "{w}/taken"),
        setup=_file(),
    ),
    Case(
        "dataset-is-directory",
        "fs",
        ("datasets", "show", "{w}/d.jsonl"),
        setup=lambda w, a: (w / "d.jsonl").mkdir(),
    ),
    Case(
        "config-is-directory",
        "fs",
        ("run", *TINY, "--config", "{w}/c.toml", "--out", "{w}/run"),
        setup=lambda w, a: (w / "c.toml").mkdir(),
    ),
    # ---- 4: inputs the model cannot take ---------------------------------------------------
    Case(
        "cache-rows-over-context",
        "length",
        ("cache", *GPT2, "--dataset", "{w}/long.jsonl", "--out", "{w}/c"),
        setup=_write("long.jsonl", LONG_ROWS),
    ),
    Case(
        "cache-rows-over-context-gemma",
        "length",
        ("cache", *TINY, "--dataset", "{w}/long.jsonl", "--out", "{w}/c"),
        setup=_write("long.jsonl", LONG_ROWS),
    ),
    Case("api-extract-over-context", "length", call=_api_extract_long),
    Case(
        "cache-max-tokens-zero",
        "length",
        ("cache", *TINY, "--dataset", "dialect_us_uk", "--max-tokens", "0", "--out", "{w}/c"),
    ),
    Case(
        "cache-max-tokens-over-context",
        "length",
        ("cache", *TINY, "--dataset", "dialect_us_uk", "--max-tokens", "5000", "--out", "{w}/c"),
    ),
    Case(
        "cache-truncate-middle",
        "length",
        (
            "cache",
            *TINY,
            "--dataset",
            "dialect_us_uk",
            "--max-tokens",
            "8",
            "--truncate",
            "middle",
            "--out",
            "{w}/c",
        ),
    ),
    Case(
        "cache-batch-too-big-for-memory",
        "length",
        (
            "cache",
            *TINY,
            "--dataset",
            "{w}/long.jsonl",
            "--max-tokens",
            "1000",
            "--batch-size",
            "64",
            "--out",
            "{w}/c",
        ),
        setup=_write("long.jsonl", _rows(64, text="z" * 900)),
        patch=_small_memory,
    ),
    # ---- 5: values checked too late or not at all ------------------------------------------
    Case(
        "probe-n-boot-zero",
        "value",
        ("probe", "--store", "{store}", "--out", "{w}/o", "--n-boot", "0"),
    ),
    Case(
        "probe-folds-one",
        "value",
        ("probe", "--store", "{store}", "--out", "{w}/o", "--folds", "1"),
    ),
    Case(
        "probe-folds-fifty",
        "value",
        ("probe", "--store", "{store}", "--out", "{w}/o", "--folds", "50", "--n-boot", "10"),
    ),
    Case("probe-C-nan", "value", ("probe", "--store", "{store}", "--out", "{w}/o", "--C", "nan")),
    Case(
        "probe-C-negative", "value", ("probe", "--store", "{store}", "--out", "{w}/o", "--C", "-1")
    ),
    Case(
        "transfer-C-inf",
        "value",
        ("transfer", "--train", "{store}", "--test", "{store}", "--out", "{w}/o", "--C", "inf"),
    ),
    Case(
        "transfer-layer-missing",
        "value",
        ("transfer", "--train", "{store}", "--test", "{store}", "--out", "{w}/o", "--layer", "9"),
    ),
    Case(
        "generate-max-new-tokens-negative",
        "value",
        ("generate", *TINY, "--max-new-tokens", "-1", "hi"),
    ),
    Case(
        "generate-strength-nan",
        "value",
        ("generate", *TINY, "--steer", "{direction}", "--strength", "nan", "hi"),
    ),
    Case(
        "generate-device-cuda",
        "value",
        ("generate", "--model", "tiny-gemma3", "--device", "cuda", "hi"),
    ),
    Case("info-device-cuda1", "value", ("info", "tiny-gpt2", "--device", "cuda:1")),
    Case("info-device-nonsense", "value", ("info", "tiny-gpt2", "--device", "quantum")),
    Case("info-dtype-int8", "value", ("info", "tiny-gpt2", "--dtype", "int8")),
    Case("generate-lone-surrogate", "value", ("generate", *TINY, "bad \udcff byte")),
    Case(
        "cache-size-zero",
        "value",
        ("cache", *TINY, "--dataset", "dialect_us_uk", "--size", "0", "--out", "{w}/c"),
    ),
    Case("readers-size-zero", "value", ("readers", "train", "--size", "0", "--out", "{w}/r")),
    Case("dashboard-size-negative", "value", ("dashboard", "--size", "-3")),
    Case(
        "cache-batch-size-zero",
        "value",
        ("cache", *TINY, "--dataset", "dialect_us_uk", "--batch-size", "0", "--out", "{w}/c"),
    ),
    Case(
        "cache-layers-out-of-range",
        "value",
        ("cache", *TINY, "--dataset", "dialect_us_uk", "--layers", "7", "--out", "{w}/c"),
    ),
    Case(
        "cache-sites-unknown",
        "value",
        ("cache", *TINY, "--dataset", "dialect_us_uk", "--sites", "q_proj", "--out", "{w}/c"),
    ),
    Case(
        "cache-dataset-unknown",
        "value",
        ("cache", *TINY, "--dataset", "nosuchset", "--out", "{w}/c"),
    ),
    Case(
        "steer-strengths-nan", "value", ("steer", *TINY, "--strengths", "nan,0.1", "--out", "{w}/o")
    ),
    Case("steer-strengths-empty", "value", ("steer", *TINY, "--strengths", ",", "--out", "{w}/o")),
    Case("steer-kl-max-negative", "value", ("steer", *TINY, "--kl-max", "-1", "--out", "{w}/o")),
    Case(
        "steer-layers-out-of-range", "value", ("steer", *TINY, "--layers", "12", "--out", "{w}/o")
    ),
    Case(
        "mediate-n-boot-zero",
        "value",
        ("mediate", *TINY, "--dataset", "dialect", "--n-boot", "0", "--out", "{w}/o"),
    ),
    Case(
        "mediate-n-perm-negative",
        "value",
        ("mediate", *TINY, "--dataset", "dialect", "--n-perm", "-5", "--out", "{w}/o"),
    ),
    Case(
        "mediate-positions-junk",
        "value",
        ("mediate", *TINY, "--dataset", "dialect", "--positions", "a,b", "--out", "{w}/o"),
    ),
    Case("audit-max-items-zero", "value", ("audit", *TINY, "--max-items", "0", "--out", "{w}/o")),
    Case(
        "audit-policy-nan",
        "value",
        ("audit", *TINY, "--policy", "{w}/p.toml", "--out", "{w}/o"),
        setup=_write("p.toml", "[tier1]\nmax_shift = nan\n"),
    ),
    Case(
        "audit-policy-not-utf8",
        "value",
        ("audit", *TINY, "--policy", "{w}/p.toml", "--out", "{w}/o"),
        setup=_write("p.toml", b"[tier1]\nmetric = '\xff\xfe'\n"),
    ),
    Case(
        "audit-policy-nested",
        "value",
        ("audit", *TINY, "--policy", "{w}/p.toml", "--out", "{w}/o"),
        setup=_write("p.toml", NESTED_TOML),
    ),
    Case(
        "audit-policy-bool-max",
        "value",
        ("audit", *TINY, "--policy", "{w}/p.toml", "--out", "{w}/o"),
        setup=_write("p.toml", "[[tier2.rule]]\nkind = 'utility_drop'\nmax = true\n"),
    ),
    Case(
        "run-config-not-utf8",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_write("c.toml", b"model = '\xff'\n"),
    ),
    Case(
        "run-config-nested",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_write("c.toml", NESTED_TOML),
    ),
    Case(
        "run-config-size-bool",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_cfg("[probes]\nsize = true\n"),
    ),
    Case(
        "run-config-n-boot-zero",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_cfg("[probes]\nn_boot = 0\n"),
    ),
    Case(
        "run-config-C-nan",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_cfg("[probes]\nC = nan\n"),
    ),
    Case(
        "run-config-strengths-inf",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_cfg("[interventions]\nstrengths = [inf, 0.1]\n"),
    ),
    Case(
        "run-config-max-items-zero",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_cfg("[audit]\nmax_items = 0\n"),
    ),
    Case(
        "run-config-n-perm-zero",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_cfg("[mediation]\nn_perm = 0\n"),
    ),
    Case(
        "run-config-device-cuda",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_cfg("device = 'cuda'\n"),
    ),
    Case(
        "run-config-dtype-int",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_cfg("dtype = 'int64'\n"),
    ),
    Case(
        "run-config-folds-fifty",
        "value",
        (*RUN, "--config", "{w}/c.toml"),
        setup=_write(
            "c.toml", "stages = ['probes']\n[probes]\nattributes = ['age']\nsize = 24\nfolds = 50\n"
        ),
    ),
    Case(
        "run-device-cuda",
        "value",
        ("run", "--model", "tiny-gemma3", "--device", "cuda", "--out", "{w}/run"),
    ),
    Case(
        "dataset-header-labels-int",
        "value",
        ("datasets", "show", "{w}/d.jsonl"),
        setup=_write("d.jsonl", '{"_probes_dataset": {"labels": 5}}\n' + GOOD_ROWS),
    ),
    Case(
        "dataset-header-labels-string",
        "value",
        ("datasets", "show", "{w}/d.jsonl"),
        setup=_write("d.jsonl", '{"_probes_dataset": {"labels": "ab"}}\n' + GOOD_ROWS),
    ),
    Case(
        "dataset-header-name-list",
        "value",
        ("datasets", "show", "{w}/d.jsonl"),
        setup=_write("d.jsonl", '{"_probes_dataset": {"name": [1]}}\n' + GOOD_ROWS),
    ),
    Case(
        "dataset-lone-surrogate",
        "value",
        ("datasets", "show", "{w}/d.jsonl"),
        setup=_write("d.jsonl", '{"text": "a \\ud800 b", "label": "a"}\n' + GOOD_ROWS),
    ),
    Case(
        "dataset-not-utf8",
        "value",
        ("datasets", "show", "{w}/d.jsonl"),
        setup=_write("d.jsonl", b'{"text": "\xff", "label": "a"}\n'),
    ),
    Case(
        "dataset-nested-json",
        "value",
        ("datasets", "show", "{w}/d.jsonl"),
        setup=_write(
            "d.jsonl",
            '{"text": "a", "label": "a", "meta": '
            + "[" * 100000
            + "]" * 100000
            + "}\n"
            + GOOD_ROWS,
        ),
    ),
    Case(
        "dataset-label-float",
        "value",
        ("datasets", "show", "{w}/d.jsonl"),
        setup=_write("d.jsonl", GOOD_ROWS + '{"text": "a", "label": 1.5}\n'),
    ),
    Case("datasets-show-n-negative", "value", ("datasets", "show", "dialect_us_uk", "--n", "-3")),
    Case(
        "datasets-export-size-zero",
        "value",
        ("datasets", "export", "dialect_us_uk", "--size", "0", "--out", "{w}/x.jsonl"),
    ),
    Case(
        "api-load-dataset-size-bool",
        "value",
        call=_api("probes.datasets.load_dataset", "dialect_us_uk", size=True),
    ),
    Case(
        "api-fit-layerwise-folds-one",
        "value",
        call=_api("probes.probing.fit_layerwise", _opened("store"), n_folds=1),
    ),
    Case(
        "api-fit-layerwise-n-boot-zero",
        "value",
        call=_api("probes.probing.fit_layerwise", _opened("store"), n_boot=0),
    ),
    Case(
        "api-extract-batch-size-bool",
        "value",
        call=_api(
            "probes.cache.extraction.extract",
            _model("gemma"),
            ["hi"],
            batch_size=True,
            progress=False,
            cache_root=_path("cache"),
        ),
    ),
    Case(
        "api-extract-lone-surrogate",
        "value",
        call=_api(
            "probes.cache.extraction.extract",
            _model("gemma"),
            ["bad \ud800"],
            progress=False,
            cache_root=_path("cache"),
        ),
    ),
    Case(
        "api-load-config-nan",
        "value",
        call=_api("probes.pipeline.load_config", _path("c.toml")),
        setup=_write("c.toml", "[interventions]\nkl_max = nan\n"),
    ),
    Case("api-parse-policy-nested", "value", call=_api("probes.audit.parse_policy", NESTED_TOML)),
    Case(
        "api-load-model-device-cuda",
        "value",
        call=_api("probes.models.load_model", "tiny-gpt2", device="cuda"),
    ),
]
