"""The tests run with jaxtyping + beartype on the tensor modules (pyproject's pytest options):
a call whose array does not fit its annotation fails loudly instead of computing on."""

from __future__ import annotations

import numpy as np
import pytest
from jaxtyping import TypeCheckError

from probes.audit.stats import personalization_bias


def test_a_wrongly_typed_array_is_refused_at_call_time():
    points = np.zeros((3, 2), dtype=bool)  # booleans where (safety, utility) reals belong
    with pytest.raises(TypeCheckError):
        personalization_bias(points)
    assert personalization_bias(np.zeros((3, 2))) == 0.0
