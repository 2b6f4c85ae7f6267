"""Extraction on the embedded Gemma equals run_with_cache at the same positions."""

from __future__ import annotations

import pytest
import torch

from probes.cache.extraction import extract

pytestmark = pytest.mark.integration

PROMPTS = [
    "I love the colour of autumn leaves.",
    "Hi",
    "My mum and I took the lift up to our flat after a long day at work.",
]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_embedded_extract_matches_run_with_cache(gemma, tmp_path, padding_side):
    layers = [0, 8, 17]
    store = extract(
        gemma,
        PROMPTS,
        layers=layers,
        sites=["resid_pre", "resid_post", "attn_out", "mlp_out"],
        position="last",
        batch_size=3,
        cache_root=tmp_path,
        padding_side=padding_side,
        progress=False,
    )
    names = {
        "resid_pre": "blocks.{}.hook_in",
        "resid_post": "blocks.{}.hook_out",
        "attn_out": "blocks.{}.attn.hook_out",
        "mlp_out": "blocks.{}.mlp.hook_out",
    }
    for row, prompt in enumerate(PROMPTS):
        ids = torch.tensor([gemma.tokenizer(prompt).input_ids])
        _, cache = gemma.bridge.run_with_cache(ids)
        for site, pattern in names.items():
            for layer in layers:
                ref = cache[pattern.format(layer)][0, -1]
                got = store.get(layer, site)[row]
                torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-3)
