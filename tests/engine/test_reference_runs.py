"""The default strategy (GeneticAlgorithm) reproduces the runs of the engine before the split."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine.reference_runs import REFERENCE, SCENARIOS, record
from tests.mathlib import pinned


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """The reference recorded on a machine whose math gives this one's results (see
    ``tests.mathlib``): both were written by the engine before the split."""
    with np.load(pinned(REFERENCE)) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ga_runs_match_the_pre_split_reference_bit_for_bit(
    scenario: str, reference: dict[str, np.ndarray]
) -> None:
    """Every generation's genes, fitness, ids, parents and status equal the stored reference."""
    now = {k: v for k, v in record().items() if k.startswith(f"{scenario}/")}
    expected = {k: v for k, v in reference.items() if k.startswith(f"{scenario}/")}
    assert sorted(now) == sorted(expected)
    for key, value in expected.items():
        assert now[key].dtype == value.dtype, key
        np.testing.assert_array_equal(now[key], value, err_msg=key, strict=True)
