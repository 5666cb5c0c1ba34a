"""The generation math outside the strategy: pure functions, arguments in, arrays out.

The engine calls these in order for each generation, between the strategy's ``ask`` and
``tell`` and after them: :func:`inject_uploads` (uploaded agents take the place of the
weakest offspring), :func:`assemble` (the next population from the rows ``tell`` kept),
then :func:`evolution_update`, :func:`elite_changes` and :func:`regression_inputs` for the
events. None of them draws from the run's generator or reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from tdevlab.engine import operators as ops
from tdevlab.engine.agents import (
    AgentBatch,
    Pending,
    agent_id,
    agent_name,
    agent_update,
    agent_updates,
)
from tdevlab.engine.events import (
    ELITE,
    EVOLVING,
    VIOLATING,
    AgentUpdate,
    AgentUpdates,
    EvolutionUpdate,
)
from tdevlab.engine.genes import FloatArray, GeneSpace
from tdevlab.engine.operators import BoolArray, IntArray
from tdevlab.engine.params import Parameters
from tdevlab.engine.population import Population
from tdevlab.engine.problems import Evaluation, Problem
from tdevlab.engine.strategy import StrategyState
from tdevlab.exceptions import EvolutionFailed

__all__ = [
    "Newborn",
    "assemble",
    "elite_changes",
    "evolution_update",
    "inject_uploads",
    "parent_ids",
    "population_score",
    "strategy_outcome",
    "worst_agents",
]


class Newborn(NamedTuple):
    """The offspring of a generation after evaluation, with agent numbers and parents."""

    genes: FloatArray
    evaluation: Evaluation
    agent_id: IntArray
    parent_a: IntArray
    parent_b: IntArray


def population_score(
    fitness: FloatArray, memory_kb: FloatArray, speed_us: FloatArray, params: Parameters
) -> tuple[FloatArray, FloatArray]:
    """Return (violation, feasibility-first score) under the limits in ``params``."""
    violation = ops.constraint_violation(
        memory_kb, speed_us, params.memory_limit_kb, params.speed_limit_us
    )
    return violation, ops.selection_score(fitness, violation)


def inject_uploads(
    pending: Sequence[Pending], born: Newborn, params: Parameters
) -> tuple[Newborn, int]:
    """Put uploaded agents in place of the weakest offspring.

    Args:
        pending: Uploaded agents, oldest first; at most ``len(born.agent_id)`` join.
        born: The evaluated offspring; its arrays are changed in place.
        params: For the constraint limits that rank the offspring.

    Returns:
        The offspring (evaluation copied when changed) and how many uploads joined.
    """
    if not pending:
        return born, 0
    fitness, memory_kb, speed_us = (np.array(a, dtype=np.float64) for a in born.evaluation)
    _, score = population_score(fitness, memory_kb, speed_us, params)
    count = min(len(pending), born.agent_id.size)
    weakest = ops.rank_order(score)[::-1][:count]
    for row, agent in zip(weakest, pending[:count], strict=True):
        born.genes[row] = agent.genes
        fitness[row], memory_kb[row], speed_us[row] = agent.metrics
        born.agent_id[row] = agent.agent_id
        born.parent_a[row] = born.parent_b[row] = -1
    return born._replace(evaluation=Evaluation(fitness, memory_kb, speed_us)), count


def _take(
    previous: np.ndarray | None,
    new: np.ndarray,
    keep: IntArray,
    carry: int,
    born: tuple[IntArray, IntArray] | None = None,
) -> np.ndarray:
    """Rows ``keep`` of ``previous`` followed by ``new`` (``carry``: kept rows of previous
    that come first, when the rest is all of ``new`` in order; ``born``:
    :func:`~tdevlab.engine.operators.offspring_rows` of ``keep``, shared by the columns)."""
    if carry >= 0:
        if previous is None or carry == 0:
            return new
        return np.concatenate([previous[keep[:carry]], new])
    if previous is None:
        return new[keep]
    return ops.take_candidates(previous, new, keep, born)


def _carry(keep: IntArray, previous: int, new: int) -> int:
    """How many rows of ``keep`` come from the previous population, when ``keep`` is those
    rows followed by every new row in order; -1 otherwise (a general selection)."""
    carry = keep.size - new
    if carry < 0:
        return -1
    if new and (int(keep[carry]) != previous or int(keep[-1]) != previous + new - 1):
        return -1  # cheap refusals first: most general selections end elsewhere
    if carry and int(keep[:carry].max()) >= previous:
        return -1
    # `new` distinct rows from previous..previous+new-1, first and last in place, in
    # increasing order: exactly that range.
    if new > 2 and not bool((keep[carry + 1 :] > keep[carry:-1]).all()):
        return -1
    return carry


def assemble(
    previous: Population | None,
    born: Newborn,
    keep: IntArray,
    generation: int,
    params: Parameters,
    block: tuple[IntArray, FloatArray] | None = None,
) -> tuple[Population, FloatArray, IntArray]:
    """The next population: the candidate rows ``keep`` (previous rows, then offspring).

    ``block`` is the strategy's ``(carried, [previous genes of carried; offspring genes])``
    when it built that matrix (see ``Offspring.block``): used as the genes, uncopied, when
    ``keep`` is exactly the carried rows then every offspring.

    Returns:
        The population, its feasibility-first score, and its best rows
        (``max(elite_count, 1)`` of them, best first).
    """
    n = 0 if previous is None else len(previous)
    k = born.agent_id.size
    carry = _carry(keep, n, k)
    birth = np.full(k, generation, dtype=np.int64)

    born_rows = None if previous is None or carry >= 0 else ops.offspring_rows(keep, n)

    def take(field: str, new: np.ndarray) -> np.ndarray:
        old = None if previous is None else getattr(previous, field)
        return _take(old, new, keep, carry, born_rows)

    fitness, memory_kb, speed_us = (
        take(name, values) for name, values in zip(Evaluation._fields, born.evaluation, strict=True)
    )
    violation, score = population_score(fitness, memory_kb, speed_us, params)
    status = np.where(violation > 0, VIOLATING, EVOLVING).astype(np.int8)
    top = ops.elite_indices(score, max(params.elite_count, 1))
    if params.elite_count:
        elite = top[: params.elite_count]
        status[elite] = np.where(violation[elite] > 0, VIOLATING, ELITE)
    genes = (
        block[1]
        if block is not None
        and carry == block[0].size
        and np.array_equal(keep[:carry], block[0])
        and block[1].shape == (keep.size, born.genes.shape[1])
        else take("genes", born.genes)
    )
    population = Population(
        genes,
        fitness,
        memory_kb,
        speed_us,
        violation,
        take("agent_id", born.agent_id),
        take("parent_a", born.parent_a),
        take("parent_b", born.parent_b),
        take("birth_generation", birth),
        status,
    )
    return population, score, top


def row_sources(
    previous: Population | None,
    population: Population,
    keep: IntArray,
    block: tuple[IntArray, FloatArray] | None,
) -> IntArray | None:
    """``Snapshot.source`` of a population :func:`assemble` made: the previous row of each
    kept row, -1 for offspring; ``None`` when the genes are a matrix the strategy built
    (its own rows, not checked to be the previous ones) or there was no previous."""
    if previous is None or (block is not None and population.genes is block[1]):
        return None
    source: IntArray = np.where(keep < len(previous), keep, -1)
    return source


def evolution_update(
    *,
    problem: Problem,
    population: Population,
    best: int,
    generation: int,
    last_best: float,
    evolved: int,
    mutations: int,
    crossovers: int,
    run_id: int | None,
    branch: int,
    params: Parameters,
    evaluation_ms: float,
    timestamp: float,
    measures: Mapping[str, Any] | None = None,
) -> EvolutionUpdate:
    """The ``evolution_update`` of a generation whose best row is ``best``, with the
    strategy's ``measures`` (see ``STRATEGY_FIELDS``)."""
    best_fitness = float(population.fitness[best])
    number = int(population.agent_id[best])
    return EvolutionUpdate(
        generation=generation,
        # ndarray.mean's own sum and division (bit for bit), without its Python-level setup.
        average_fitness=float(np.add.reduce(population.fitness)) / len(population),
        best_fitness=best_fitness,
        improvement=0.0 if math.isnan(last_best) else best_fitness - last_best,
        agents_evolved=evolved,
        mutations_applied=mutations,
        crossovers=crossovers,
        run_id=run_id,
        branch=branch,
        population_size=len(population),
        feasible_fraction=float(np.count_nonzero(population.violation == 0) / len(population)),
        diversity=problem.gene_space.diversity(population.genes),
        worst_fitness=float(population.fitness.min()),
        best_agent_id=agent_id(number),
        best_agent_name=agent_name(problem, population.genes[best], number),
        best_memory_kb=float(population.memory_kb[best]),
        best_speed_us=float(population.speed_us[best]),
        mutation_rate=params.mutation_rate,
        crossover_rate=params.crossover_rate,
        evaluation_ms=evaluation_ms,
        timestamp=timestamp,
        **(measures or {}),
    )


def elite_changes(
    *,
    problem: Problem,
    population: Population,
    previous: Population | None,
    order: IntArray,
    elite_count: int,
    previous_elite: Sequence[int],
    previous_best: int,
    generation: int,
) -> tuple[list[AgentUpdate], list[int]]:
    """Agent updates for who entered or left the elite, and a new best.

    Returns:
        The updates and the elite's agent numbers, best first.
    """
    elite_rows = order[:elite_count]
    elite_ids: list[int] = population.agent_id[elite_rows].tolist()
    before = set(previous_elite)
    best_id = int(population.agent_id[order[0]])
    updates: list[AgentUpdate] = []
    for row in order if elite_count == 0 else elite_rows:
        number = int(population.agent_id[row])
        if number == best_id and number != previous_best:
            updates.append(agent_update(problem, population, int(row), generation, "new_best"))
        elif number not in before and elite_count:
            updates.append(agent_update(problem, population, int(row), generation, "elite"))
    if previous is not None and previous_elite:
        current = set(elite_ids)
        for number in previous_elite:
            if number in current:
                continue
            row = population.row_of(number)
            if row is not None:
                updates.append(agent_update(problem, population, row, generation, "left_elite"))
                continue
            old = previous.row_of(number)
            if old is not None:
                updates.append(
                    agent_update(problem, previous, old, generation, "left_elite", retired=True)
                )
    return updates, elite_ids


#: A snapshot's ``members`` when the member set is the whole population, in its order (an
#: archive): thousands of agent numbers a generation need not be listed again.
WHOLE_POPULATION = "population"


def stored_members(members: IntArray | None, population: Population) -> list[int] | str | None:
    """The member set (agent numbers) as a snapshot keeps it: JSON."""
    if members is None:
        return None
    if members.size == len(population) and np.array_equal(members, population.agent_id):
        return WHOLE_POPULATION
    stored: list[int] = members.tolist()
    return stored


def restored_members(stored: list[int] | str | None, population: Population) -> IntArray:
    """The member set a snapshot keeps (see :func:`stored_members`), as agent numbers."""
    if stored == WHOLE_POPULATION:
        return population.agent_id
    return np.asarray(stored or [], dtype=np.int64)


def strategy_outcome(
    *,
    strategy: object,
    state: StrategyState,
    problem: Problem,
    population: Population,
    previous: Population | None,
    params: Parameters,
    previous_members: IntArray,
    generation: int,
    keep: IntArray | None = None,
) -> tuple[dict[str, float], Sequence[AgentUpdate], IntArray | None]:
    """What a strategy with a member set (a front, an archive) reports for a generation.

    A strategy may have ``members(state, space, population, params) -> rows``, its
    ``member_reason`` (``"front"``, ``"archive"``), and ``measures(state, space, population,
    params, members) -> {field: value}``; the GA has none.

    ``keep`` is the tell's selection (rows of the previous population, then offspring): when
    the members were the whole previous population and are the whole new one (an archive),
    who entered and left follows from it without comparing the sets.

    Returns:
        The measures, agent updates for members that entered (reason ``member_reason``)
        or left (``left_<reason>``; retired when no longer in the population), and the
        members' agent numbers (``None`` without a member set).
    """
    members_of = getattr(strategy, "members", None)
    measures_of = getattr(strategy, "measures", None)
    if members_of is None:
        return {}, [], None
    space = problem.gene_space
    rows = np.asarray(members_of(state, space, population, params), dtype=np.int64)
    raw = {} if measures_of is None else measures_of(state, space, population, params, rows)
    # Plain numbers (a NumPy scalar would not encode to JSON), integers where the field is.
    measures = {k: int(v) if k == "front_size" else float(v) for k, v in raw.items()}
    reason = str(getattr(strategy, "member_reason", "member"))
    ids = population.agent_id[rows]
    before = previous_members
    if (
        keep is not None
        and previous is not None
        and rows.size == len(population) == keep.size
        and np.array_equal(rows, np.arange(rows.size))
        and np.array_equal(before, previous.agent_id)
    ):
        # Carried rows were members and stay; offspring rows are new agents, so they
        # entered; previous rows not kept are no longer in the population: retired.
        # Built when read (an archive changes by hundreds of agents a generation).
        carried = keep < len(previous)
        dropped = np.ones(len(previous), dtype=np.bool_)
        dropped[keep[carried]] = False
        batches = AgentUpdates(
            [
                AgentBatch(problem, population, np.flatnonzero(~carried), generation, reason),
                AgentBatch(
                    problem,
                    previous,
                    np.flatnonzero(dropped),
                    generation,
                    f"left_{reason}",
                    retired=True,
                ),
            ]
        )
        return measures, batches, ids
    updates = agent_updates(problem, population, rows[~_isin(ids, before)], generation, reason)
    left = before[~_isin(before, ids)]
    if left.size:
        # Still in the population (left the set only), else retired from the previous one;
        # announced in the order they were members.
        here, here_rows = _rows_of(population, left)
        gone = left[~here]
        was, was_rows = (
            _rows_of(previous, gone)
            if previous is not None and gone.size
            else (np.zeros(0, dtype=np.bool_), np.zeros(0, dtype=np.int64))
        )
        staying = agent_updates(problem, population, here_rows, generation, f"left_{reason}")
        retired = (
            []
            if previous is None
            else agent_updates(
                problem, previous, was_rows, generation, f"left_{reason}", retired=True
            )
        )
        by_number = {u.agent_id: u for u in staying + retired}
        updates += [by_number[k] for k in (agent_id(n) for n in left.tolist()) if k in by_number]
    return measures, updates, ids


#: Agent-number spans up to this use a lookup table (a byte per number) to compare sets.
_TABLE_SPAN = 1 << 20


def _isin(numbers: IntArray, other: IntArray) -> BoolArray:
    """``np.isin`` for agent numbers: by lookup table while their span is at most
    :data:`_TABLE_SPAN` (a thousand members: ~20 µs against ~130 µs by sorting)."""
    if numbers.size == 0 or other.size == 0:
        return np.zeros(numbers.size, dtype=np.bool_)
    span = max(int(numbers.max()), int(other.max())) - min(int(numbers.min()), int(other.min()))
    return np.isin(numbers, other, kind="table" if span <= _TABLE_SPAN else "sort")


def _rows_of(population: Population, numbers: IntArray) -> tuple[BoolArray, IntArray]:
    """Which agent ``numbers`` are in ``population``, and their rows (in that order)."""
    if len(population) == 0:
        return np.zeros(numbers.size, dtype=np.bool_), np.zeros(0, dtype=np.int64)
    order = np.argsort(population.agent_id, kind="stable")
    sorted_ids = population.agent_id[order]
    at = np.minimum(np.searchsorted(sorted_ids, numbers), sorted_ids.size - 1)
    found = sorted_ids[at] == numbers
    return found, order[at[found]]


def worst_agents(population: Population, generation: int, count: int = 5) -> list[str]:
    """Ids of the ``count`` weakest agents born in ``generation`` (weakest first, ties by row)."""
    newborn = np.flatnonzero(population.birth_generation == generation)
    fitness = population.fitness[newborn]
    if fitness.size > count:
        part = np.argpartition(fitness, count - 1)[:count]
    else:
        part = np.arange(fitness.size)
    weakest = part[np.lexsort((part, fitness[part]))]
    return [agent_id(i) for i in population.agent_id[newborn][weakest]]


def best_violation(
    population: Population, best: int, params: Parameters
) -> dict[str, tuple[float, float]]:
    """The limits the best agent breaks: name -> (value, limit)."""
    out: dict[str, tuple[float, float]] = {}
    if population.violation[best] > 0:
        if population.memory_kb[best] > params.memory_limit_kb:
            out["memory_kb"] = (float(population.memory_kb[best]), params.memory_limit_kb)
        if population.speed_us[best] > params.speed_limit_us:
            out["speed_us"] = (float(population.speed_us[best]), params.speed_limit_us)
    return out


def check_offspring_genes(genes: object, space: GeneSpace) -> FloatArray:
    """The offspring matrix, checked: ``(k >= 1, len(space))`` finite floats.

    Raises:
        ValueError: naming what is wrong.
    """
    array = np.asarray(genes)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] != len(space.genes):
        raise ValueError(
            f"ask() must propose a (k >= 1, {len(space.genes)}) genes matrix, got shape "
            f"{array.shape}"
        )
    if array.dtype != np.float64:
        array = array.astype(np.float64)
    # One reduction in the common case; the exact test only when the sum is not finite.
    if not np.isfinite(array.sum()) and not np.isfinite(array).all():
        raise ValueError("ask() proposed genes that are not finite")
    return array


def parent_ids(previous: Population | None, rows: np.ndarray | None, k: int) -> np.ndarray:
    """Agent numbers of parents given as population rows (-1: no parent)."""
    if rows is None or previous is None:
        return np.full(k, -1, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.shape != (k,) or (k and rows.max() >= len(previous)):
        raise EvolutionFailed(
            f"ask() gave parent rows of shape {rows.shape} (max {rows.max(initial=-1)}) for "
            f"{k} genomes of a population of {len(previous)}"
        )
    if rows.min(initial=0) >= 0:  # every genome has this parent (the GA's first parents)
        ids: np.ndarray = previous.agent_id[rows]
        return ids
    return np.where(rows >= 0, previous.agent_id[rows], -1)
