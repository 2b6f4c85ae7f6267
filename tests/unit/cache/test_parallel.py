"""Data-parallel extraction on a local 2-worker Ray cluster: the store is byte for byte the
single-process store, a killed worker's shard is redone, a partial store resumes, and the
single-process path never imports Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probes.cache import MANIFEST, PARTIAL, extract
from probes.cache.integrity import manifest_digest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
PROMPTS = [f"user {i} wrote: {'my mum and the lorry ' * (i % 4)}hello" for i in range(23)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    marker = tmp_path_factory.mktemp("kill") / "killed"
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PROBES_RAY_KILL_ONCE")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved["PYTHONPATH"]]))
    os.environ["PROBES_RAY_KILL_ONCE"] = str(marker)  # armed only by the test that wants it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield marker
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _shards(store) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.path.glob("shard-*.safetensors"))}


def test_two_workers_write_the_single_process_store_byte_for_byte(cluster, tiny_gpt2, tmp_path):
    single = extract(tiny_gpt2, PROMPTS, shard_size=5, cache_root=tmp_path / "a", progress=False)
    parallel = extract(
        tiny_gpt2, PROMPTS, shard_size=5, cache_root=tmp_path / "b", workers=2, progress=False
    )
    assert single.path.name == parallel.path.name
    assert len(_shards(single)) == 5 and _shards(single) == _shards(parallel)
    assert single.manifest["shards"] == parallel.manifest["shards"]


def test_a_killed_workers_shard_is_redone(cluster, tiny_gpt2, tmp_path):
    Path(f"{cluster}.armed").write_text("")
    try:
        parallel = extract(
            tiny_gpt2, PROMPTS, shard_size=5, cache_root=tmp_path / "b", workers=2, progress=False
        )
    finally:
        Path(f"{cluster}.armed").unlink()
    assert cluster.exists()  # a worker really died in shard 1
    single = extract(tiny_gpt2, PROMPTS, shard_size=5, cache_root=tmp_path / "a", progress=False)
    assert _shards(single) == _shards(parallel)


def test_a_partial_store_resumes_on_the_workers(cluster, tiny_gpt2, tmp_path):
    store = extract(tiny_gpt2, PROMPTS, shard_size=5, cache_root=tmp_path, progress=False)
    full = _shards(store)
    manifest = json.loads((store.path / MANIFEST).read_text())
    kept = [s for s in manifest["shards"] if s["index"] in (0, 2)]
    for shard in manifest["shards"]:
        if shard not in kept:
            (store.path / shard["file"]).unlink()
    (store.path / MANIFEST).unlink()
    partial = {**manifest, "complete": False, "shards": kept}
    partial["digest"] = manifest_digest(partial)  # as the writer signs a partial manifest
    (store.path / PARTIAL).write_text(json.dumps(partial))
    before = {s["file"]: (store.path / s["file"]).stat().st_mtime_ns for s in kept}
    resumed = extract(
        tiny_gpt2, PROMPTS, shard_size=5, cache_root=tmp_path, workers=2, progress=False
    )
    assert _shards(resumed) == full
    assert before == {f: (store.path / f).stat().st_mtime_ns for f in before}  # not redone


def test_the_single_process_path_never_imports_ray(tmp_path):
    code = (
        "import sys; from probes.cache import extract; from probes.models import load_model;"
        f"extract(load_model('tiny-gpt2'), ['a b', 'c'], cache_root={str(tmp_path)!r},"
        " progress=False); assert 'ray' not in sys.modules, 'ray was imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
