"""Sweeps and patching on tiny models: known answers where the construction fixes them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probes.cli.app import main
from probes.datasets import BehaviorItem
from probes.directions import Direction
from probes.interventions.patching import patching_heatmap
from probes.interventions.steering import flip_rate, sweep
from probes.viz.steering import plot_dose_response, plot_pareto, plot_patching

TEXTS = [
    ("I live in a flat near the lorry depot.", "I live in a unit near the truck depot."),
    ("My mum bought crisp at the shop.", "My mom bought chips at the shop."),
    ("We queued for the lift in the rain.", "We waited for the elev in the rain."),
]


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
                    answers={"uk": ("t",), "us": ("p",)},  # one byte: single-token answers
                    positive="uk",
                    negative="us",
                    pair_id=f"t{i}",
                    group="g",
                )
            )
    return items


def test_flip_rate_counts_only_items_leaning_the_other_way():
    base = np.array([-2.0, -1.0, 3.0, -0.5])
    after = np.array([1.0, -0.1, 4.0, 0.2])
    assert flip_rate(base, after, +1) == (pytest.approx(2 / 3), 3)
    assert flip_rate(base, np.array([-3, -2, -1, -1.0]), -1) == (1.0, 1)


def test_sweep_has_a_direction_and_a_random_control_cell_per_setting(tiny_gemma):
    gen = torch.Generator().manual_seed(0)
    dirs = [
        Direction(torch.randn(tiny_gemma.d_model, generator=gen), layer=layer, typical_norm=5.0)
        for layer in (1, 2)
    ]
    result = sweep(tiny_gemma, dirs, _items(), [-1.0, 0.0, 2.0], neutral=["The moon is"])
    assert len(result.rows) == 2 * 2 * 2  # layers x kinds x nonzero strengths
    for row in result.rows:
        assert row["kl_mean"] > 0
    strong = result.cell("direction", 1, 2.0)
    assert strong["mean_shift"] != 0
    plot_dose_response(result)
    plot_pareto(result)


def test_patching_known_answers_at_the_embedding_and_the_last_layer(tiny_gemma):
    items = _items()
    last = tiny_gemma.n_layers - 1
    first = patching_heatmap(tiny_gemma, items, "us", "uk", layers=[0], site="resid_pre")
    assert first.n_pairs == 3 and first.skipped_pairs == 0
    row = dict(zip(first.columns, first.restored[0], strict=True))
    # at the embeddings only the cue tokens differ: patching them restores everything
    assert row["cue tokens"] == pytest.approx(1.0, abs=1e-4)
    for column, value in row.items():
        if column != "cue tokens":
            assert value == pytest.approx(0.0, abs=1e-4)
    final = patching_heatmap(tiny_gemma, items, "us", "uk", layers=[last], site="resid_post")
    row = dict(zip(final.columns, final.restored[0], strict=True))
    # after the last block only the last token's residual reaches the answer
    assert row["last token"] == pytest.approx(1.0, abs=1e-3)
    assert row["cue tokens"] == pytest.approx(0.0, abs=1e-4)
    plot_patching(final)


def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:  # refused by argparse, before the model loads
        main(["steer", "--model", "tiny-gemma3", "--strengths", "a,b", "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "expected a number" in err
    code = main(["generate", "hi", "--model", "tiny-gemma3", "--steer", str(tmp_path / "none")])
    assert code == 2


def test_cli_generate_with_a_saved_direction(capsys, tmp_path, tiny_gemma):
    d = Direction(torch.randn(tiny_gemma.d_model), layer=1, typical_norm=3.0)
    d.save(tmp_path / "d")
    assert (
        main(
            [
                "generate",
                "Hello",
                "--model",
                "tiny-gemma3",
                "--steer",
                str(tmp_path / "d.json"),
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    assert "Hello" in capsys.readouterr().out
    assert json.loads((tmp_path / "d.json").read_text())["layer"] == 1
