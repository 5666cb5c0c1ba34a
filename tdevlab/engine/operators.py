"""Pure genetic operators over whole ``(population, genes)`` arrays.

Every function takes its randomness from the ``numpy.random.Generator`` it is given and
draws a fixed sequence for given shapes, so the same generator state gives the same
result. Nothing here loops over agents in Python.
"""

from __future__ import annotations

import math
from typing import NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from tdevlab.engine.genes import FloatArray, GeneSpace, bounded

IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

__all__ = [
    "Mutation",
    "bernoulli_cells",
    "blend_crossover",
    "constraint_violation",
    "elite_indices",
    "mutate",
    "offspring_rows",
    "random_bits",
    "rank_order",
    "selection_score",
    "take_candidates",
    "tournament_select",
    "uniform_crossover",
]


def constraint_violation(
    memory_kb: FloatArray, speed_us: FloatArray, memory_limit_kb: float, speed_limit_us: float
) -> FloatArray:
    """Return each agent's total relative excess over the limits (0 for feasible agents).

    A memory of 7.15 KB against a 6.5 KB limit is a violation of 0.1; excesses add up.
    """
    if (
        memory_kb.max(initial=0.0) <= memory_limit_kb
        and speed_us.max(initial=0.0) <= speed_limit_us
    ):
        return np.zeros(memory_kb.shape)  # the common case, in two cheap reductions
    mem = np.maximum(memory_kb / memory_limit_kb - 1.0, 0.0)
    speed = np.maximum(speed_us / speed_limit_us - 1.0, 0.0)
    return mem + speed


def selection_score(fitness: FloatArray, violation: FloatArray) -> FloatArray:
    """Return one number per agent whose order is the feasibility-first order.

    When every agent is feasible this is the fitness itself. Otherwise it is each agent's
    rank (higher is better): feasible agents by fitness, then infeasible agents by smaller
    violation (ties by higher fitness).
    """
    infeasible = violation > 0.0
    if not infeasible.any():
        return fitness
    # Ranks, not "fitness below the minimum": subtracting from huge fitness values loses
    # the difference to rounding. Sort keys, last first: infeasible after feasible, then
    # smaller violation, then higher fitness.
    order = np.lexsort((-fitness, violation, infeasible))
    score = np.empty(fitness.size, dtype=np.float64)
    score[order] = np.arange(fitness.size, 0, -1, dtype=np.float64)
    return score


def rank_order(score: FloatArray) -> IntArray:
    """Return agent indices from best to worst (ties keep index order)."""
    return np.argsort(-score, kind="stable")


def elite_indices(score: FloatArray, count: int) -> IntArray:
    """Return the indices of the ``count`` best agents, best first."""
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    if count == 1:
        return np.array([np.argmax(score)], dtype=np.int64)  # the first best, as below
    if count >= score.size:
        return rank_order(score)
    top = np.argpartition(-score, count - 1)[:count]
    # Order the few winners; ties broken by index so the result is deterministic.
    return top[np.lexsort((top, -score[top]))]


def tournament_select(
    rng: np.random.Generator, score: FloatArray, n: int, tournament_size: int
) -> IntArray:
    """Pick ``n`` parents, each the best of ``tournament_size`` agents drawn with replacement."""
    contestants = rng.integers(0, score.size, size=(tournament_size, n))
    # A running best over the (few) rounds: much faster than argmax along a short axis.
    # Strict ">" keeps the earliest contestant on ties, as argmax would.
    chosen: IntArray = contestants[0].copy()
    best = score[chosen]
    for round_ in contestants[1:]:
        challenger = score[round_]
        wins = challenger > best
        # copyto with a mask writes in place; boolean indexing would compact first.
        np.copyto(chosen, round_, where=wins)
        np.copyto(best, challenger, where=wins)
    return chosen


def uniform_crossover(
    rng: np.random.Generator,
    first: FloatArray,
    second: FloatArray,
    crossover_rate: float,
    *,
    inplace: bool = False,
) -> tuple[FloatArray, BoolArray]:
    """Return one child per parent pair and which children were crossed.

    With probability ``crossover_rate`` a child takes each gene from either parent with
    equal chance; otherwise it is a copy of ``first``. With ``inplace`` the children are
    written over ``first`` (which must be C-contiguous) and it is returned.
    """
    n = first.shape[0]
    crossed: BoolArray = np.asarray(rng.random(n) < crossover_rate)
    take_second = random_bits(rng, first.shape)
    take_second &= crossed[:, None]
    # Copy then overwrite the chosen cells: about half the cost of np.where on a random mask.
    cells = np.flatnonzero(take_second)
    child = first if inplace and first.flags.c_contiguous else first.copy()
    child.reshape(-1)[cells] = second.reshape(-1)[cells]
    return child, crossed


def random_bits(rng: np.random.Generator, shape: tuple[int, ...]) -> BoolArray:
    """Return fair coin flips of ``shape`` (eight per random byte: cheap for big masks)."""
    size = math.prod(shape)
    raw = np.frombuffer(rng.bytes((size + 7) // 8), dtype=np.uint8)
    bits: BoolArray = np.unpackbits(raw, count=size).view(np.bool_).reshape(shape)
    return bits


def blend_crossover(
    rng: np.random.Generator,
    first: FloatArray,
    second: FloatArray,
    crossover_rate: float,
    space: GeneSpace,
    alpha: float = 0.5,
) -> tuple[FloatArray, BoolArray]:
    """BLX-alpha crossover: numeric genes drawn from the parents' interval widened by alpha.

    Works in search space (log genes by their log), then clips to bounds and rounds integer
    genes. Categorical genes are inherited from either parent with equal chance.
    """
    n = first.shape[0]
    crossed: BoolArray = np.asarray(rng.random(n) < crossover_rate)
    u = rng.random(first.shape) * (1.0 + 2.0 * alpha) - alpha
    pick = rng.random(first.shape) < 0.5
    a = space.to_search(first) if space.any_log else first
    b = space.to_search(second) if space.any_log else second
    child = space.from_search(a + u * (b - a))
    if space.any_categorical:
        cols = space.is_categorical
        child[:, cols] = np.where(pick[:, cols], second[:, cols], first[:, cols])
    return np.where(crossed[:, None], child, first), crossed


def take_candidates(
    old: np.ndarray,
    new: np.ndarray,
    keep: IntArray,
    offspring: tuple[IntArray, IntArray] | None = None,
) -> np.ndarray:
    """Rows ``keep`` of the candidates ``[old; new]`` (``old``'s rows, then ``new``'s),
    gathered without concatenating the two (an archive of thousands of rows would be copied
    whole for a few changes). ``offspring``: :func:`offspring_rows` of ``keep``, when
    several columns are taken with it."""
    n = old.shape[0]
    if n == 0:
        return new[keep]
    rows, sources = offspring_rows(keep, n) if offspring is None else offspring
    out = np.empty((keep.size, *new.shape[1:]), dtype=np.result_type(old, new))
    # Every row from `old`, rows past its end clipped to its last, then `new`'s rows over those.
    np.take(old, keep, axis=0, out=out, mode="clip")
    out[rows] = new[sources]
    return out


def offspring_rows(keep: IntArray, old: int) -> tuple[IntArray, IntArray]:
    """The positions in ``keep`` of rows from ``new`` (candidates past ``old``), and which."""
    rows = np.flatnonzero(keep >= old)
    return rows, keep[rows] - old


class Mutation(NamedTuple):
    """Where a mutation happened: parallel arrays over the mutated (agent, gene) cells."""

    rows: IntArray
    columns: IntArray
    old: FloatArray
    new: FloatArray


def bernoulli_cells(rng: np.random.Generator, n_cells: int, rate: float) -> IntArray:
    """Return the sorted flat indices of ``n_cells`` independent Bernoulli(``rate``) trials.

    Draws the gaps between successes (geometric) instead of one uniform per cell: the same
    distribution as ``flatnonzero(rng.random(n_cells) < rate)`` at a fraction of the draws.
    """
    if rate <= 0.0 or n_cells <= 0:
        return np.empty(0, dtype=np.int64)
    if rate >= 1.0:
        return np.arange(n_cells, dtype=np.int64)
    expected = n_cells * rate
    batch = int(expected + 4.0 * math.sqrt(expected * (1.0 - rate)) + 16)
    # Any gap past the last cell ends the draw, so clip gaps there: tiny rates would
    # otherwise draw gaps whose sum overflows int64.
    positions = np.cumsum(np.minimum(rng.geometric(rate, size=batch), n_cells + 1)) - 1
    # Rarely the batch ends before the last cell: keep drawing until it is passed.
    while positions[-1] < n_cells:
        gaps = np.minimum(rng.geometric(rate, size=batch), n_cells + 1)
        positions = np.concatenate([positions, np.cumsum(gaps) + positions[-1]])
    return positions[: np.searchsorted(positions, n_cells)]


def mutate(
    rng: np.random.Generator,
    genes: FloatArray,
    mutation_rate: float,
    sigma: float,
    space: GeneSpace,
    *,
    inplace: bool = False,
) -> tuple[FloatArray, Mutation]:
    """Mutate each gene with probability ``mutation_rate``; return the new matrix and the cells.

    Numeric genes get gaussian noise of ``sigma`` times their search-space span
    ("parameter_adjustment"), clipped to bounds and rounded for integers; categorical
    genes switch to another choice chosen uniformly ("categorical_switch"). A mutation
    that lands back on the same value (clipping at a bound) still counts as applied.
    ``genes`` is left unchanged unless ``inplace`` (then it is returned, mutated).
    """
    cells = bernoulli_cells(rng, genes.size, mutation_rate)
    if cells.size == genes.size and genes.size:
        return _mutate_every(rng, genes, sigma, space, inplace)
    return _mutate_cells(rng, genes, cells, sigma, space, inplace)


def _mutate_cells(
    rng: np.random.Generator,
    genes: FloatArray,
    cells: IntArray,
    sigma: float,
    space: GeneSpace,
    inplace: bool,
) -> tuple[FloatArray, Mutation]:
    """:func:`mutate` of the given flat ``cells`` (sorted)."""
    n_genes = genes.shape[1]
    if n_genes & (n_genes - 1) == 0:  # a power of two: shift and mask, the same numbers
        shift = n_genes.bit_length() - 1
        rows, columns = cells >> shift, cells & (n_genes - 1)
    else:
        rows, columns = np.divmod(cells, n_genes)
    out = genes if inplace else genes.copy()
    # A contiguous view when `genes` is (row slices of a C-ordered matrix are).
    flat = out.reshape(-1)
    old = flat[cells]
    noise = rng.standard_normal(cells.size)

    if space.any_log:
        log = space.is_log[columns]
        value = np.where(log, np.log(np.where(log, old, 1.0)), old)
    else:
        value = old.copy()
    value += noise * (sigma * space.search_span[columns])
    bounded(value, space.search_low[columns], space.search_high[columns], out=value)
    value = space.cells_from_search(columns, value)
    if space.any_categorical:
        cat = space.is_categorical[columns]
        k = space.n_choices[columns[cat]]
        # Shift by 1..k-1 so the choice always changes.
        shift = 1 + np.floor(rng.random(k.size) * (k - 1))
        value[cat] = np.mod(old[cat] + shift, k)

    flat[cells] = value
    if not np.shares_memory(flat, out):
        out[...] = flat.reshape(out.shape)  # `genes` was not contiguous: reshape copied
    return out, Mutation(rows, columns, old, value)


def _mutate_every(
    rng: np.random.Generator, genes: FloatArray, sigma: float, space: GeneSpace, inplace: bool
) -> tuple[FloatArray, Mutation]:
    """:func:`mutate` when every cell mutates (rate 1, as MAP-Elites' gaussian emitter):
    the same draws and the same float operations on each cell, on whole rows instead of
    gathered and scattered cells (about a third of the time at 100 x 20)."""
    n, n_genes = genes.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), n_genes)
    columns = np.tile(np.arange(n_genes, dtype=np.int64), n)
    old = genes.reshape(-1).copy()
    noise = rng.standard_normal(old.size).reshape(n, n_genes)
    if space.any_log:
        log = space.is_log[columns]
        value = np.where(log, np.log(np.where(log, old, 1.0)), old).reshape(n, n_genes)
    else:
        value = old.reshape(n, n_genes).copy()
    value += noise * (sigma * space.search_span)
    bounded(value, space.search_low, space.search_high, out=value)
    flat = space.cells_from_search(columns, value.reshape(-1))
    if space.any_categorical:
        cat = space.is_categorical[columns]
        k = space.n_choices[columns[cat]]
        shift = 1 + np.floor(rng.random(k.size) * (k - 1))  # as in `mutate`
        flat[cat] = np.mod(old[cat] + shift, k)
    if inplace:
        genes[...] = flat.reshape(n, n_genes)
        return genes, Mutation(rows, columns, old, flat)
    return flat.reshape(n, n_genes).copy(), Mutation(rows, columns, old, flat)
