"""The one place that knows both names of the KV-cache keyword, and the version guard."""

from __future__ import annotations

import pytest

from probes.errors import ProbesError
from probes.models.compat import (
    _routed_update,
    cached_length,
    check_supported,
    installed_version,
    kv_cache_from,
)


class _Cache:
    def __init__(self, n: int) -> None:
        self.n = n

    def get_seq_length(self) -> int:
        return self.n


@pytest.mark.parametrize("name", ["cache", "past_key_values", "layer_past"])
def test_the_cache_is_found_under_every_name(name):
    cache = _Cache(7)
    assert kv_cache_from({name: cache, "attention_mask": None}) is cache
    assert cached_length({name: cache}) == 7


def test_no_cache_means_length_zero():
    assert kv_cache_from({"past_key_values": None}) is None
    assert cached_length({}) == 0


def test_routed_update_hands_the_new_name_to_code_that_reads_the_old():
    seen = {}

    def update(k, v, **kwargs):
        seen.update(kwargs)
        return k, v

    cache = _Cache(3)
    _routed_update(update, 1, 2, cache=cache)
    assert seen["past_key_values"] is cache
    seen.clear()
    old = _Cache(4)
    _routed_update(update, 1, 2, past_key_values=old, cache=cache)
    assert seen["past_key_values"] is old  # an explicit old-style cache wins


def test_check_supported_refuses_a_known_broken_version_in_one_line():
    found = installed_version("transformers")
    assert found is not None
    check_supported({"transformers": "999.0"})  # far future: fine
    with pytest.raises(ProbesError) as err:
        check_supported({"transformers": found})
    message = str(err.value)
    assert found in message and "constraints.txt" in message and "\n" not in message
