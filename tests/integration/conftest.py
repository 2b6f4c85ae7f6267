"""The embedded Gemma model, loaded once for all integration tests (converted on first use)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def gemma():
    from probes.models.loading import load_model

    return load_model("gemma-3-270m", device="cpu")
