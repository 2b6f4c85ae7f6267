"""`probes doctor`: its checks pass on a healthy tiny model and fail, in one line, on a broken
one (a KV cache that is never extended, hooks left behind, a lock that disagrees)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from probes.cli.app import main
from probes.doctor import (
    check_cached_generation,
    check_hooks,
    check_store_roundtrip,
    check_versions,
    read_lock,
)
from probes.models.compat import route_kv_cache


@pytest.mark.parametrize("check", [check_cached_generation, check_hooks, check_store_roundtrip])
def test_checks_pass_on_healthy_tiny_models(tiny_model, check):
    result = check(tiny_model)
    assert result.ok, result.detail


def test_cached_generation_check_catches_a_cache_that_is_never_extended(tiny_gemma, monkeypatch):
    # What transformers 5.24 did to TransformerLens 4.3: the attention never saw the cache.
    for module in tiny_gemma.bridge.modules():
        if hasattr(module, "_update_kv_cache"):
            monkeypatch.setattr(module, "_update_kv_cache", lambda k, v, **kw: (k, v))
    result = check_cached_generation(tiny_gemma, tokens=12)
    assert not result.ok
    assert "transformers" in result.detail and "constraints.txt" in result.detail
    assert "\n" not in result.detail


def test_hook_check_catches_a_hook_left_behind(tiny_gpt2, monkeypatch):
    import probes.interventions.hooks as interventions

    original = interventions._hooked
    leaked = []

    @contextmanager
    def leaky(model, hooks):  # removes its own hooks but leaves one behind on the body
        with original(model, hooks):
            yield
        leaked.append(model.hf_model.register_forward_hook(lambda *args: None))

    monkeypatch.setattr(interventions, "_hooked", leaky)
    try:
        result = check_hooks(tiny_gpt2)
    finally:
        for handle in leaked:
            handle.remove()
    assert leaked and not result.ok and "left behind" in result.detail


def test_versions_warn_when_a_hooked_library_is_off_the_lock(tmp_path):
    lock = tmp_path / "constraints.txt"
    lock.write_text("# a lock\ntransformers==0.0.1\nnumpy==0.0.1 ; python_version>'3'\n")
    assert read_lock(lock) == {"transformers": "0.0.1", "numpy": "0.0.1"}
    rows = {c.name: c for c in check_versions(lock)}
    assert rows["transformers"].ok and rows["transformers"].warning
    assert "0.0.1" in rows["transformers"].detail
    assert rows["numpy"].ok and not rows["numpy"].warning  # not hooked: information only
    assert rows["torch"].ok and not rows["torch"].warning  # not in this lock


def test_route_kv_cache_is_idempotent(tiny_gemma):
    assert route_kv_cache(tiny_gemma.bridge) == 0  # load_model already routed every component


def test_doctor_command_passes_on_the_tiny_models(capsys):
    assert main(["doctor", "--model", "tiny-gpt2"]) == 0
    out = capsys.readouterr().out
    assert "cached generation (tiny-gpt2)" in out and "all checks passed" in out


def test_doctor_command_exits_1_with_a_fail_line(capsys):
    assert main(["doctor", "--model", "no-such-model"]) == 1
    captured = capsys.readouterr()
    assert "FAIL  load (no-such-model)" in captured.out
    assert "1 check(s) failed" in captured.err
