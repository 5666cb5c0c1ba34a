"""Pareto tools on whole arrays: constrained non-dominated sorting, crowding, hypervolume.

Every function takes an ``(n, m)`` matrix of objective values to *minimise* (negate the
ones to maximise first). Nothing loops over points in Python: sorting peels fronts from a
dominance matrix (``n x n`` booleans, built in blocks), crowding distance is computed for
all fronts at once, and hypervolume sweeps sorted arrays.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tdevlab.engine.genes import FloatArray

__all__ = [
    "crowding_distance",
    "dominance_matrix",
    "hypervolume",
    "non_dominated_ranks",
    "survivors",
]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Rows of the dominance matrix built at a time (bounds the ``block x n x m`` temporary).
_BLOCK = 1024


def dominance_matrix(objectives: FloatArray) -> BoolArray:
    """``D[i, j]``: point i dominates point j (no worse everywhere, better somewhere).

    Built one objective at a time as ``n x n`` comparisons (a reduction over a short last
    axis would be several times slower): i dominates j when it is no worse in every
    objective and not equal in all of them.
    """
    n, m = objectives.shape
    out = np.empty((n, n), dtype=np.bool_)
    for start in range(0, n, _BLOCK):
        rows = objectives[start : start + _BLOCK]
        no_worse = rows[:, None, 0] <= objectives[None, :, 0]
        no_better = rows[:, None, 0] >= objectives[None, :, 0]
        for k in range(1, m):
            no_worse &= rows[:, None, k] <= objectives[None, :, k]
            no_better &= rows[:, None, k] >= objectives[None, :, k]
        np.logical_and(no_worse, ~no_better, out=out[start : start + _BLOCK])
    return out


def non_dominated_ranks(objectives: FloatArray, violation: FloatArray | None = None) -> IntArray:
    """Front index of each point (0: non-dominated) under Deb's constrained domination.

    A feasible point (violation 0) dominates every infeasible one; infeasible points are
    ranked by their violation alone (equal violations share a front), after all feasible
    fronts; feasible points by Pareto domination.
    """
    n = objectives.shape[0]
    ranks = np.zeros(n, dtype=np.int64)
    feasible = np.ones(n, dtype=np.bool_) if violation is None else violation <= 0
    rows = np.flatnonzero(feasible)
    fronts = 0
    if rows.size:
        dominated_by = dominance_matrix(objectives[rows])
        count = dominated_by.sum(axis=0)  # how many points dominate each point
        remaining = np.ones(rows.size, dtype=np.bool_)
        while remaining.any():
            front = remaining & (count == 0)
            ranks[rows[front]] = fronts
            remaining &= ~front
            count -= dominated_by[front].sum(axis=0)
            fronts += 1
    if violation is not None and not feasible.all():
        bad = np.flatnonzero(~feasible)
        _, level = np.unique(violation[bad], return_inverse=True)
        ranks[bad] = fronts + level
    return ranks


def crowding_distance(objectives: FloatArray, ranks: IntArray) -> FloatArray:
    """NSGA-II crowding distance of each point within its front (``inf`` at the extremes).

    Computed for all fronts at once: per objective, points sorted by (front, value); a
    point's neighbours are the ones beside it in that order when they share its front.
    """
    n, m = objectives.shape
    distance = np.zeros(n, dtype=np.float64)
    if n == 0:
        return distance
    for k in range(m):
        values = objectives[:, k]
        order = np.lexsort((values, ranks))
        sorted_values = values[order]
        sorted_ranks = ranks[order]
        starts = np.flatnonzero(np.r_[True, sorted_ranks[1:] != sorted_ranks[:-1]])
        lows = sorted_values[starts]
        highs = np.maximum.reduceat(sorted_values, starts)
        span = np.repeat(highs - lows, np.diff(np.r_[starts, n]))
        first = np.zeros(n, dtype=np.bool_)
        first[starts] = True
        last = np.r_[first[1:], True]
        gap = np.zeros(n, dtype=np.float64)
        inner = ~(first | last)
        with np.errstate(divide="ignore", invalid="ignore"):
            gap[inner] = (sorted_values[2:] - sorted_values[:-2])[inner[1:-1]] / span[inner]
        gap[first | last] = np.inf
        gap[inner & (span == 0)] = 0.0
        distance[order] += gap
    return distance


def survivors(
    objectives: FloatArray, violation: FloatArray | None, count: int
) -> tuple[IntArray, IntArray, FloatArray]:
    """NSGA-II survival: the ``count`` best points by (front, larger crowding distance).

    Returns:
        The surviving rows (best first), and every point's rank and crowding distance.
    """
    ranks = non_dominated_ranks(objectives, violation)
    crowding = crowding_distance(objectives, ranks)
    # Ties beyond rank and crowding keep row order (stable), so the result is reproducible.
    order = np.lexsort((np.arange(ranks.size), -crowding, ranks))
    return order[:count].astype(np.int64), ranks, crowding


def hypervolume(objectives: FloatArray, reference: FloatArray) -> float:
    """The volume dominated by the points and bounded by ``reference`` (minimisation).

    Exact for any number of objectives by slicing along the last objective (the 2-D case is
    one sorted sweep); points not better than the reference everywhere add nothing.
    """
    points = objectives[(objectives < reference).all(axis=1)]
    if points.size == 0:
        return 0.0
    return float(_hv(np.unique(points, axis=0), np.asarray(reference, dtype=np.float64)))


def _hv(points: FloatArray, reference: FloatArray) -> float:
    m = points.shape[1]
    if m == 1:
        return float(reference[0] - points[:, 0].min())
    if m == 2:
        order = np.argsort(points[:, 0], kind="stable")
        x, y = points[order, 0], points[order, 1]
        best_y = np.minimum.accumulate(y)
        keep = np.r_[True, best_y[1:] < best_y[:-1]]
        x, y = x[keep], best_y[keep]
        widths = np.diff(np.r_[x, reference[0]])
        return float(np.sum(widths * (reference[1] - y)))
    # Slice along the last objective: between consecutive levels, the (m-1)-D volume of
    # the points at or below the level.
    order = np.argsort(points[:, -1], kind="stable")
    levels = points[order, -1]
    bounds = np.r_[levels[1:], reference[-1]]
    total = 0.0
    for i in range(levels.size):
        height = bounds[i] - levels[i]
        if height > 0:
            total += height * _hv(points[order[: i + 1], :-1], reference[:-1])
    return total
