"""The embedded Gemma 3 270M really personalizes: UK cues favour UK clubs, US cues US teams."""

from __future__ import annotations

import pytest
import torch

from probes.behavior.scoring import continuation_logprobs
from probes.pipeline.run import DIALECT_PAIRS, UK_TEAMS, US_TEAMS

pytestmark = pytest.mark.integration


def _log_odds(model, prompt: str) -> float:
    lps = continuation_logprobs(model, [prompt] * 9, UK_TEAMS + US_TEAMS)
    return float(torch.logsumexp(lps[:5], 0) - torch.logsumexp(lps[5:], 0))


def test_embedded_model_loads_offline_with_expected_shape(gemma):
    assert (gemma.n_layers, gemma.d_model, gemma.vocab_size) == (18, 640, 262144)
    assert "blocks.17.hook_out" in gemma.bridge.hook_dict


@pytest.mark.parametrize("pair", DIALECT_PAIRS, ids=lambda p: p[0][:24])
def test_team_answer_follows_the_dialect_cue(gemma, pair):
    uk_prompt, us_prompt = pair
    assert _log_odds(gemma, uk_prompt) > 0, "UK cues should make a UK club more likely"
    assert _log_odds(gemma, us_prompt) < 0, "US cues should make a US team more likely"
