"""Shared fixtures: tiny random-weight models built in code (no download), loaded once."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_gemma():
    from probes.models.loading import load_model

    return load_model("tiny-gemma3", device="cpu")


@pytest.fixture(scope="session")
def tiny_gpt2():
    from probes.models.loading import load_model

    return load_model("tiny-gpt2", device="cpu")


@pytest.fixture(scope="session", params=["tiny-gemma3", "tiny-gpt2"])
def tiny_model(request, tiny_gemma, tiny_gpt2):
    return tiny_gemma if request.param == "tiny-gemma3" else tiny_gpt2
