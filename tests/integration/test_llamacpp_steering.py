"""The exported dialect vector in llama.cpp itself (the embedded Q4_K_M GGUF): on the 64
dialect behaviour items it moves the UK-vs-US log-odds the way the suite's own steering at the
same layer and strength does. Skipped when llama-cpp-python (the ``llama`` extra) is missing."""

from __future__ import annotations

import numpy as np
import pytest

from probes.datasets import load_behavior_items
from probes.models import embedded_gguf
from probes.pipeline.interventions import directions_for
from probes.vectors.comparison import compare_engines
from probes.vectors.llamacpp import LlamaCppModel, control_buffer

pytestmark = pytest.mark.integration
pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install 'probes[llama]')"
)


@pytest.fixture(scope="module")
def engine():
    with LlamaCppModel(embedded_gguf()) as model:
        yield model


def test_exported_vector_moves_llama_cpp_like_the_suite(gemma, engine, tmp_path):
    (direction,) = directions_for(gemma, "dialect", [11], "mean_diff")
    path = direction.to_gguf(tmp_path / "dialect.gguf", 0.15, gemma)
    items = load_behavior_items("dialect")
    assert len(items) == 64
    result = compare_engines(gemma, [direction], 0.15, items, engine, path)
    s = result.summary()
    assert s["same_direction"] >= 0.9
    assert s["shift_correlation"] > 0.5
    assert s["engine_mean_shift"] > 0 and s["suite_mean_shift"] > 0
    # the two engines score the same thing without the vector (quantisation moves it a little)
    assert s["base_correlation"] > 0.9
    # scale -1 in llama.cpp is the suite's steering at -0.15
    back = compare_engines(gemma, [direction], 0.15, items, engine, path, scale=-1.0)
    assert back.summary()["same_direction"] >= 0.9 and back.summary()["engine_mean_shift"] < 0


def test_control_buffer_puts_direction_n_on_row_n_minus_1(gemma, engine, tmp_path):
    (direction,) = directions_for(gemma, "dialect", [11], "mean_diff")
    path = direction.to_gguf(tmp_path / "dialect.gguf", 0.15, gemma)
    buffer = control_buffer(path, 2.0, engine.n_embd, engine.n_layer)
    assert buffer.shape == (gemma.n_layers - 1, gemma.d_model)
    assert np.flatnonzero(np.abs(buffer).sum(1)).tolist() == [10]
    np.testing.assert_array_equal(buffer[10], 2.0 * direction.scaled(0.15).float().numpy())
