"""The default strategy: a generational genetic algorithm with elitism.

Each generation keeps the ``elite_count`` best agents unchanged and fills the rest with
children: tournament selection (feasibility-first scores), uniform or blend crossover with
probability ``crossover_rate``, then per-gene mutation. The draws from the run's generator
are, in order: tournaments, crossover, mutation; the initial population is one draw of
``space.random``. Runs are the same, bit for bit, as the engine's before the Strategy seam
(``tests/engine/test_reference_runs.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tdevlab.engine import operators as ops
from tdevlab.engine.genes import GeneSpace
from tdevlab.engine.operators import IntArray
from tdevlab.engine.params import Parameters
from tdevlab.engine.strategy import (
    Offspring,
    RunView,
    Scored,
    StrategyState,
    register_strategy,
)

__all__ = ["GeneticAlgorithm"]


class GeneticAlgorithm:
    """Tournament selection, crossover, mutation and elitism over whole arrays.

    It has no state of its own: the population and the run's generator are all it needs,
    and both are in every snapshot. Its settings are the run's :class:`Parameters`
    (``tournament_size``, ``crossover``, ``crossover_rate``, ``blend_alpha``,
    ``mutation_rate``, ``mutation_sigma``, ``elite_count``), so they can change mid-run.
    """

    name = "ga"
    config: dict[str, Any] = {}

    def init(self, space: GeneSpace, params: Parameters) -> StrategyState:
        """No state."""
        return {}

    def ask(
        self, rng: np.random.Generator, state: StrategyState, run: RunView
    ) -> tuple[Offspring, StrategyState]:
        """Children of tournament winners (the whole random population for generation 0)."""
        p = run.params
        if run.population is None or run.score is None:
            return Offspring(run.space.random(rng, p.population_size)), state
        pop, score = run.population, run.score
        elites = ops.elite_indices(score, p.elite_count)
        n_elite = elites.size
        n_children = p.population_size - n_elite
        parents = ops.tournament_select(rng, score, 2 * n_children, p.tournament_size)
        first, second = parents[:n_children], parents[n_children:]
        # Elites go through crossover paired with themselves: it leaves them as they are,
        # and the generator draws for the whole population, as the GA always has.
        rows_a = np.concatenate([elites, first])
        rows_b = np.concatenate([elites, second])
        block = pop.genes[rows_a]  # a fresh matrix: crossed and mutated in place
        if p.crossover == "blend":
            genes, crossed = ops.blend_crossover(
                rng,
                block,
                pop.genes[rows_b],
                p.crossover_rate,
                run.space,
                p.blend_alpha,
            )
        else:
            genes, crossed = ops.uniform_crossover(
                rng, block, pop.genes[rows_b], p.crossover_rate, inplace=True
            )
        crossed = crossed[n_elite:]
        children = genes[n_elite:]
        _, mutation = ops.mutate(
            rng, children, p.mutation_rate, p.mutation_sigma, run.space, inplace=True
        )
        offspring = Offspring(
            children,
            parent_a=first,
            parent_b=np.where(crossed, second, -1),
            crossed=crossed,
            mutation=mutation,
            carried=elites,
            block=genes,  # the elites' rows, unchanged by crossing with themselves, then these
        )
        return offspring, state

    def tell(
        self,
        rng: np.random.Generator,
        state: StrategyState,
        run: RunView,
        offspring: Offspring,
        scored: Scored,
    ) -> tuple[IntArray, StrategyState]:
        """The elites, then every child."""
        n = 0 if run.population is None else len(run.population)
        children = np.arange(n, n + len(offspring), dtype=np.int64)
        if run.score is None:
            return children, state
        elites = offspring.carried  # chosen by ask, from the same scores
        if elites is None:
            elites = ops.elite_indices(run.score, run.params.elite_count)
        return np.concatenate([elites, children]), state


register_strategy("ga", GeneticAlgorithm)
