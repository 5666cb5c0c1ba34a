"""Pure genetic operators over whole ``(population, genes)`` arrays.

Every function takes its randomness from the ``numpy.random.Generator`` it is given and
draws a fixed sequence for given shapes, so the same generator state gives the same
result. Nothing here loops over agents in Python.
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from tdevlab.engine.genes import FloatArray, GeneSpace

IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

__all__ = [
    "Mutation",
    "blend_crossover",
    "constraint_violation",
    "elite_indices",
    "mutate",
    "rank_order",
    "selection_score",
    "tournament_select",
    "uniform_crossover",
]


def constraint_violation(
    memory_kb: FloatArray, speed_us: FloatArray, memory_limit_kb: float, speed_limit_us: float
) -> FloatArray:
    """Return each agent's total relative excess over the limits (0 for feasible agents).

    A memory of 7.15 KB against a 6.5 KB limit is a violation of 0.1; excesses add up.
    """
    mem = np.maximum(memory_kb / memory_limit_kb - 1.0, 0.0)
    speed = np.maximum(speed_us / speed_limit_us - 1.0, 0.0)
    return mem + speed


def selection_score(fitness: FloatArray, violation: FloatArray) -> FloatArray:
    """Return one number per agent whose order is the feasibility-first order.

    Feasible agents score their fitness; infeasible agents score below every feasible
    one, ordered by smaller violation. Higher is better.
    """
    infeasible = violation > 0.0
    if not infeasible.any():
        return fitness
    floor = float(fitness.min()) - 1.0
    return np.where(infeasible, floor - violation, fitness)


def rank_order(score: FloatArray) -> IntArray:
    """Return agent indices from best to worst (ties keep index order)."""
    return np.argsort(-score, kind="stable")


def elite_indices(score: FloatArray, count: int) -> IntArray:
    """Return the indices of the ``count`` best agents, best first."""
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    if count >= score.size:
        return rank_order(score)
    top = np.argpartition(-score, count - 1)[:count]
    # Order the few winners; ties broken by index so the result is deterministic.
    return top[np.lexsort((top, -score[top]))]


def tournament_select(
    rng: np.random.Generator, score: FloatArray, n: int, tournament_size: int
) -> IntArray:
    """Pick ``n`` parents, each the best of ``tournament_size`` agents drawn with replacement."""
    contestants = rng.integers(0, score.size, size=(n, tournament_size))
    winners = np.argmax(score[contestants], axis=1)
    chosen: IntArray = contestants[np.arange(n), winners]
    return chosen


def uniform_crossover(
    rng: np.random.Generator, first: FloatArray, second: FloatArray, crossover_rate: float
) -> tuple[FloatArray, BoolArray]:
    """Return one child per parent pair and which children were crossed.

    With probability ``crossover_rate`` a child takes each gene from either parent with
    equal chance; otherwise it is a copy of ``first``.
    """
    n = first.shape[0]
    crossed: BoolArray = np.asarray(rng.random(n) < crossover_rate)
    take_second: BoolArray = np.asarray(rng.random(first.shape) < 0.5)
    take_second &= crossed[:, None]
    return np.where(take_second, second, first), crossed


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


class Mutation(NamedTuple):
    """Where a mutation happened: parallel arrays over the mutated (agent, gene) cells."""

    rows: IntArray
    columns: IntArray
    old: FloatArray
    new: FloatArray


def mutate(
    rng: np.random.Generator,
    genes: FloatArray,
    mutation_rate: float,
    sigma: float,
    space: GeneSpace,
) -> tuple[FloatArray, Mutation]:
    """Mutate each gene with probability ``mutation_rate``; return the new matrix and the cells.

    Numeric genes get gaussian noise of ``sigma`` times their search-space span
    ("parameter_adjustment"), clipped to bounds and rounded for integers; categorical
    genes switch to another choice chosen uniformly ("categorical_switch"). A mutation
    that lands back on the same value (clipping at a bound) still counts as applied.
    """
    mask = rng.random(genes.shape) < mutation_rate
    rows, columns = np.nonzero(mask)
    old = genes[rows, columns]
    noise = rng.standard_normal(rows.size)
    offsets = rng.random(rows.size)

    new = old.copy()
    numeric = space.is_numeric[columns]
    log = space.is_log[columns]
    value = np.where(log, np.log(np.where(log, old, 1.0)), old) if space.any_log else old.copy()
    value += noise * (sigma * space.search_span[columns])
    np.clip(value, space.search_low[columns], space.search_high[columns], out=value)
    if space.any_log:
        value = np.where(
            log, np.clip(np.exp(value), space.low[columns], space.high[columns]), value
        )
    if space.any_integer:
        value = np.where(space.is_integer[columns], np.rint(value), value)
    new[numeric] = value[numeric]
    if space.any_categorical:
        cat = ~numeric
        k = space.n_choices[columns[cat]]
        # Shift by 1..k-1 so the choice always changes.
        shift = 1 + np.floor(offsets[cat] * (k - 1))
        new[cat] = np.mod(old[cat] + shift, k)

    out = genes.copy()
    out[rows, columns] = new
    return out, Mutation(rows.astype(np.int64), columns.astype(np.int64), old, new)
