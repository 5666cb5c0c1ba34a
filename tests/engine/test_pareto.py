"""Pareto tools against brute-force references: ranks, crowding, survival, hypervolume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tdevlab.engine.pareto import (
    crowding_distance,
    hypervolume,
    non_dominated_ranks,
    survivors,
)


def _reference_ranks(f: np.ndarray, violation: np.ndarray) -> list[int]:
    """Deb's constrained domination, peeled one front at a time in plain Python."""
    n = len(f)

    def dominates(i: int, j: int) -> bool:
        if violation[i] <= 0 < violation[j]:
            return True
        if violation[i] > 0 and violation[j] > 0:
            return bool(violation[i] < violation[j])
        if violation[j] <= 0 < violation[i]:
            return False
        return bool(np.all(f[i] <= f[j]) and np.any(f[i] < f[j]))

    ranks = [-1] * n
    remaining = set(range(n))
    front = 0
    while remaining:
        current = {j for j in remaining if not any(dominates(i, j) for i in remaining)}
        for j in current:
            ranks[j] = front
        remaining -= current
        front += 1
    return ranks


def _reference_crowding(f: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    out = np.zeros(len(f))
    for r in np.unique(ranks):
        rows = np.flatnonzero(ranks == r)
        for k in range(f.shape[1]):
            order = rows[np.lexsort((f[rows, k],))]
            values = f[order, k]
            span = values[-1] - values[0]
            out[order[0]] = out[order[-1]] = np.inf
            for i in range(1, len(order) - 1):
                if np.isfinite(out[order[i]]):
                    out[order[i]] += 0.0 if span == 0 else (values[i + 1] - values[i - 1]) / span
    return out


def _reference_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Inclusion-exclusion over the boxes [p, reference]."""
    points = points[(points < reference).all(axis=1)]
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(range(len(points)), size):
            corner = points[list(subset)].max(axis=0)
            total += (-1) ** (size + 1) * float(np.prod(reference - corner))
    return total


objective_values = arrays(
    np.float64,
    st.tuples(st.integers(1, 14), st.integers(1, 3)),
    elements=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 3.5]),  # many ties on purpose
)


@settings(max_examples=200, deadline=None)
@given(objective_values, st.data())
def test_ranks_match_deb_constrained_domination(f: np.ndarray, data: st.DataObject) -> None:
    """Whole-array sorting gives every point the front of the brute-force peeling."""
    violation = np.array(
        data.draw(st.lists(st.sampled_from([0.0, 0.0, 0.1, 0.3]), min_size=len(f), max_size=len(f)))
    )
    assert non_dominated_ranks(f, violation).tolist() == _reference_ranks(f, violation)


@settings(max_examples=200, deadline=None)
@given(objective_values)
def test_crowding_matches_the_per_front_definition(f: np.ndarray) -> None:
    """Crowding distance for all fronts at once equals the per-front textbook loop."""
    ranks = non_dominated_ranks(f)
    got = crowding_distance(f, ranks)
    want = _reference_crowding(f, ranks)
    assert np.array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)])


@settings(max_examples=150, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 7), st.integers(1, 3)),
        elements=st.floats(0, 1.2, allow_nan=False),
    )
)
def test_hypervolume_matches_inclusion_exclusion(points: np.ndarray) -> None:
    """Exact hypervolume, in 1 to 3 objectives, equals inclusion-exclusion over boxes."""
    reference = np.full(points.shape[1], 1.1)
    assert hypervolume(points, reference) == pytest.approx(
        _reference_hypervolume(points, reference), abs=1e-12
    )


def test_survivors_take_fronts_then_the_least_crowded() -> None:
    """Survival fills with whole fronts, then the partial front by larger crowding distance."""
    f = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.4, 0.6], [1.0, 1.0], [2.0, 2.0]])
    keep, ranks, crowding = survivors(f, None, 3)
    assert ranks.tolist() == [0, 0, 0, 0, 1, 2]
    # Front 0 has four points: the two extremes (inf), then the one with the larger gap.
    assert set(keep[:2].tolist()) == {0, 1}
    inner = keep[2]
    assert crowding[inner] == max(crowding[2], crowding[3])


def test_known_front_hypervolume() -> None:
    """The ZDT1 front sampled finely has the hypervolume of its integral (ref 1.1, 1.1)."""
    f1 = np.linspace(0, 1, 20_001)
    front = np.column_stack([f1, 1 - np.sqrt(f1)])
    # The integral of 1.1 - (1 - sqrt(x)) on [0, 1], plus the strip [1, 1.1] x [0, 1.1].
    exact = 0.1 + 2 / 3 + 0.1 * 1.1
    assert hypervolume(front, np.array([1.1, 1.1])) == pytest.approx(exact, abs=1e-4)
