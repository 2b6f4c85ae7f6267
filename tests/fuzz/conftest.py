"""Fixtures of the fuzz suite: the shared assets, and a private PROBES_HOME per test."""

from __future__ import annotations

import pytest

from tests.fuzz.assets import Assets


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return Assets(tmp_path_factory.mktemp("fuzz-assets"))


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBES_HOME", str(tmp_path / "home"))
