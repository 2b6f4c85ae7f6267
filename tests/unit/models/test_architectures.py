"""The architecture matrix: random-weight models of real decoder architectures, saved as local
Hugging Face folders, each driven through loading, extraction, a probe, steering, patching and
mediation with answers the construction fixes. Nothing in the suite is written per architecture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probes.behavior.scoring import _output_head, next_token_logits_at, next_token_logprobs_at
from probes.cache import extract
from probes.datasets import BehaviorItem, RenderSpec, render_behavior
from probes.directions import fit_direction
from probes.errors import UnsupportedArchitectureError
from probes.interventions.patching import patching_heatmap
from probes.interventions.steering import sweep
from probes.mediation import mediate
from probes.models.architectures import TINY_ARCHITECTURES, save_tiny_architecture
from probes.models.loading import load_model
from probes.probing import fit_layerwise

pytestmark = pytest.mark.slow

# Twins of equal byte length (the byte tokenizer then gives equal token lengths).
TEXTS = [
    ("I live in a flat near the lorry depot.", "I live in a unit near the truck depot."),
    ("My mum bought crisp at the shop.", "My mom bought chips at the shop."),
    ("We queued for the lift in the rain.", "We waited for the elev in the rain."),
    ("She put the post in the bin.", "She put the mail in the can."),
]
# Architectures whose logits are not the head's output: the fast path must refuse them.
POST_PROCESSED_LOGITS = {"granite"}


def _items() -> list[BehaviorItem]:
    items = []
    for i, (uk, us) in enumerate(TEXTS):
        for cue, text in (("uk", uk), ("us", us)):
            items.append(
                BehaviorItem(
                    id=f"t{i}:{cue}",
                    attribute="dialect",
                    text=text,
                    cue=cue,
                    answer_prefix="I drink",
                    answers={"uk": ("t",), "us": ("p",)},
                    positive="uk",
                    negative="us",
                    pair_id=f"t{i}",
                    group=f"g{i}",
                )
            )
    return items


@pytest.fixture(scope="module", params=sorted(TINY_ARCHITECTURES))
def arch_model(request, tmp_path_factory):
    folder = save_tiny_architecture(request.param, tmp_path_factory.mktemp(request.param))
    model = load_model(str(folder), device="cpu")
    model.extra["model_type"] = request.param
    return model


def test_loads_with_the_bridge_hooks_and_the_folders_facts(arch_model):
    assert arch_model.n_layers == 2 and arch_model.d_model == 64
    for name in ("blocks.0.hook_in", "blocks.1.hook_out"):
        assert name in arch_model.bridge.hook_dict
    assert arch_model.hf_model.config.model_type.startswith(arch_model.extra["model_type"][:4])


def test_extraction_matches_the_bridge_and_a_probe_fits(arch_model, tmp_path):
    items = _items()
    prompts = render_behavior(items, RenderSpec(), tokenizer=arch_model.tokenizer)
    meta = [{"label": it.cue, "group": it.group, "attribute": "dialect"} for it in items]
    store = extract(
        arch_model, prompts, metadata=meta, cache_root=tmp_path, batch_size=3, progress=False
    )
    assert store.get(1).shape == (len(prompts), arch_model.d_model)
    # the store holds what the bridge's own cache says, prompt by prompt (no padding there)
    for row in (0, 5):
        ids = arch_model.tokenizer(prompts[row], return_tensors="pt").input_ids
        _, cache = arch_model.bridge.run_with_cache(ids, names_filter=lambda n: "hook_out" in n)
        for layer in range(arch_model.n_layers):
            expected = cache[f"blocks.{layer}.hook_out"][0, -1]
            torch.testing.assert_close(store.get(layer)[row], expected, rtol=1e-4, atol=1e-5)
    result = fit_layerwise(store, n_folds=2, n_boot=20, bow=False)
    assert [r["layer"] for r in result.rows] == [0, 1]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in result.rows)


def test_steering_moves_the_answer_and_patching_and_mediation_give_known_answers(
    arch_model, tmp_path
):
    items = _items()
    prompts = render_behavior(items, RenderSpec(), tokenizer=arch_model.tokenizer)
    meta = [{"label": it.cue, "group": it.group, "attribute": "dialect"} for it in items]
    store = extract(arch_model, prompts, metadata=meta, cache_root=tmp_path, progress=False)
    direction = fit_direction(store, 0, "mean_diff", "us", "uk")
    result = sweep(arch_model, [direction], items, [0.0, 4.0], neutral=["The moon"], progress=False)
    assert result.cell("direction", 0, 4.0)["mean_shift"] != 0
    assert result.cell("direction", 0, 4.0)["kl_mean"] > 0

    first = patching_heatmap(
        arch_model, items, "us", "uk", layers=[0], site="resid_pre", progress=False
    )
    row = dict(zip(first.columns, first.restored[0], strict=True))
    assert row["cue tokens"] == pytest.approx(1.0, abs=1e-3)  # only the cue differs there
    last = arch_model.n_layers - 1
    final = patching_heatmap(
        arch_model, items, "us", "uk", layers=[last], site="resid_post", progress=False
    )
    assert dict(zip(final.columns, final.restored[0], strict=True))["last token"] == (
        pytest.approx(1.0, abs=1e-3)
    )

    a, b = (arch_model.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in "ab")

    def metric(model, texts):
        lps = next_token_logprobs_at(model, texts, [[a, b]] * len(texts), batch_size=3)
        return torch.stack([lp[0] - lp[1] for lp in lps]).float()

    twins = [(uk, us + " ok") for uk, us in TEXTS]  # unequal lengths: the last token aligns
    med = mediate(arch_model, twins, metric, [last], n_boot=50, n_perm=50, progress=False)[0]
    np.testing.assert_allclose(med.per_twin["nie"], med.per_twin["te"], atol=1e-4)
    assert np.abs(med.per_twin["te"]).max() > 0


def test_answer_token_fast_path_covers_or_falls_back(arch_model):
    prompts = ["Hello there", "a b c d e"]
    ids = [[5, 17, 100], [3, 9, 200]]
    full = next_token_logprobs_at(arch_model, prompts, ids)
    fast = next_token_logits_at(arch_model, prompts, ids)
    head = _output_head(arch_model)
    if arch_model.extra["model_type"] in POST_PROCESSED_LOGITS:
        assert head is None
        for f, g in zip(full, fast, strict=True):
            assert torch.equal(f, g)  # the full head, untouched
    else:
        assert head is not None
        for f, g in zip(full, fast, strict=True):
            torch.testing.assert_close(f - f[0], g - g[0], atol=1e-5, rtol=0)
            assert not torch.allclose(f, g)  # the normaliser really was skipped


def test_an_unsupported_architecture_is_one_line(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from probes.models.tiny import build_byte_tokenizer

    tok = build_byte_tokenizer()
    config = AutoConfig.for_model(
        "biogpt",
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        architectures=["BioGptForCausalLM"],
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError) as info:
        load_model(str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and "BioGptForCausalLM" in message and "not supported" in message
