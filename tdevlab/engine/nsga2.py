"""NSGA-II (Deb et al. 2002) as a strategy: the trade-off between objectives, live.

Each generation: binary tournaments on (front, crowding distance) pick parents, SBX
crossover (``crossover_rate`` per pair) and polynomial mutation (``mutation_rate`` per
gene) make ``population_size`` children, and the best ``population_size`` of parents and
children by constrained domination survive (Deb's rules: feasible beats infeasible, then
smaller violation; among feasible, Pareto fronts, then crowding distance). Objectives are
the problem's outputs or genes by name (default: maximise fitness, minimise memory_kb and
speed_us); the constraints are the run's limits. Sorting, crowding and survival work on
whole arrays (:mod:`tdevlab.engine.pareto`). Its state is only the hypervolume's reference
point (fixed in generation 0); the rest is the population, so rollback is exact as for the
GA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tdevlab.engine import operators as ops
from tdevlab.engine.genes import FloatArray, GeneSpace
from tdevlab.engine.objectives import Objective, check_names, columns, parse_objectives
from tdevlab.engine.operators import IntArray
from tdevlab.engine.params import Parameters
from tdevlab.engine.pareto import (
    crowding_distance,
    hypervolume,
    non_dominated_ranks,
    survivors,
)
from tdevlab.engine.population import Population
from tdevlab.engine.strategy import (
    Offspring,
    RunView,
    Scored,
    StrategyState,
    register_strategy,
)
from tdevlab.engine.variation import polynomial_mutation, sbx_crossover
from tdevlab.exceptions import InvalidParameters

__all__ = ["NSGA2", "DEFAULT_OBJECTIVES"]

DEFAULT_OBJECTIVES: tuple[str, ...] = ("max:fitness", "min:memory_kb", "min:speed_us")
#: The most objectives whose hypervolume is reported (computed exactly every generation).
EXACT_HYPERVOLUME = 3


class NSGA2:
    """Non-dominated sorting genetic algorithm II.

    Args:
        objectives: Names (``"fitness"``, ``"max:fitness"``, ``"min:memory_kb"``) or
            ``(name, "max"|"min")`` pairs; a bare name other than fitness is minimised.
        crossover_eta: SBX distribution index.
        mutation_eta: Polynomial mutation distribution index.
        reference: The hypervolume's reference point, one value per objective in the
            objectives' own units; ``None``: the worst value of each objective in
            generation 0 plus a tenth of its range, fixed for the run (in the state).

    Raises:
        InvalidParameters: for a malformed objective; an unknown name is refused when the
            strategy meets the problem (``Engine(...)``).
    """

    name = "nsga2"

    def __init__(
        self,
        objectives: Sequence[str | Sequence[str]] = DEFAULT_OBJECTIVES,
        crossover_eta: float = 15.0,
        mutation_eta: float = 20.0,
        reference: Sequence[float] | None = None,
    ) -> None:
        self.objectives: list[Objective] = parse_objectives(objectives)
        if reference is not None and (
            len(reference) != len(self.objectives)
            or not all(isinstance(v, int | float) and np.isfinite(v) for v in reference)
        ):
            raise InvalidParameters(
                f"reference={list(reference)!r} must be one finite number per objective"
            )
        self.reference = None if reference is None else [float(v) for v in reference]
        for label, eta in (("crossover_eta", crossover_eta), ("mutation_eta", mutation_eta)):
            if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0 <= eta <= 1e3:
                raise InvalidParameters(f"{label}={eta!r} must be a number within [0, 1000]")
        self.crossover_eta = float(crossover_eta)
        self.mutation_eta = float(mutation_eta)
        self.config: dict[str, Any] = {
            "objectives": [f"{'max' if s > 0 else 'min'}:{n}" for n, s in self.objectives],
            "crossover_eta": self.crossover_eta,
            "mutation_eta": self.mutation_eta,
            "reference": self.reference,
        }
        #: Agents entering and leaving the first front are announced with this reason.
        self.member_reason = "front"

    @staticmethod
    def max_population_for(budget_bytes: int) -> int:
        """The largest population a memory budget affords: sorting parents and children
        (2n of them) takes an ``2n x 2n`` dominance matrix plus two blocks as large."""
        return int(math.isqrt(budget_bytes // 3) // 2)

    @property
    def names(self) -> list[str]:
        """The objectives' names."""
        return [name for name, _ in self.objectives]

    def init(self, space: GeneSpace, params: Parameters) -> StrategyState:
        """Check the objectives against the problem; no state.

        Raises:
            InvalidParameters: naming an objective that is neither an output nor a gene.
        """
        check_names(self.names, space, "objective")
        return {}

    def minimised(
        self,
        space: GeneSpace,
        genes: FloatArray,
        fitness: FloatArray,
        memory_kb: FloatArray,
        speed_us: FloatArray,
    ) -> FloatArray:
        """The objectives as an ``(n, m)`` matrix to minimise (maximised ones negated)."""
        signs = np.array([-sign for _, sign in self.objectives], dtype=np.float64)
        return columns(self.names, space, genes, fitness, memory_kb, speed_us) * signs

    def _population(self, run: RunView, pop: Population) -> tuple[FloatArray, FloatArray]:
        objectives = self.minimised(run.space, pop.genes, pop.fitness, pop.memory_kb, pop.speed_us)
        p = run.params
        violation = ops.constraint_violation(
            pop.memory_kb, pop.speed_us, p.memory_limit_kb, p.speed_limit_us
        )
        return objectives, violation

    def ask(
        self, rng: np.random.Generator, state: StrategyState, run: RunView
    ) -> tuple[Offspring, StrategyState]:
        """Children of binary tournaments on (front, crowding); a random population first."""
        p = run.params
        n = p.population_size
        if run.population is None:
            return Offspring(run.space.random(rng, n)), state
        objectives, violation = self._population(run, run.population)
        ranks = non_dominated_ranks(objectives, violation)
        crowding = crowding_distance(objectives, ranks)
        order = np.lexsort((-crowding, ranks))  # best first
        score = np.empty(order.size, dtype=np.float64)
        score[order] = np.arange(order.size, 0, -1, dtype=np.float64)
        pairs = (n + 1) // 2
        parents = ops.tournament_select(rng, score, 2 * pairs, 2)
        first, second = parents[:pairs], parents[pairs:]
        genes = run.population.genes
        child_a, child_b, crossed = sbx_crossover(
            rng,
            genes[first],
            genes[second],
            run.space,
            crossover_rate=p.crossover_rate,
            eta=self.crossover_eta,
        )
        children = np.concatenate([child_a, child_b])[:n]
        children, mutation = polynomial_mutation(
            rng, children, run.space, mutation_rate=p.mutation_rate, eta=self.mutation_eta
        )
        crossed_children = np.concatenate([crossed, crossed])[:n]
        parent_a = np.concatenate([first, second])[:n]
        parent_b = np.where(crossed_children, np.concatenate([second, first])[:n], -1)
        offspring = Offspring(
            children,
            parent_a=parent_a,
            parent_b=parent_b,
            crossed=crossed_children,
            mutation=mutation,
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
        """The best ``population_size`` of parents and children by constrained domination."""
        n_keep = run.params.population_size
        children = self.minimised(
            run.space, offspring.genes, scored.fitness, scored.memory_kb, scored.speed_us
        )
        if run.population is None:
            objectives, violation = children, scored.violation
        else:
            previous, previous_violation = self._population(run, run.population)
            objectives = np.concatenate([previous, children])
            violation = np.concatenate([previous_violation, scored.violation])
        keep, _, _ = survivors(objectives, violation, min(n_keep, objectives.shape[0]))
        if "reference" not in state:
            state = {**state, "reference": self._reference(objectives)}
        return keep, state

    def _reference(self, objectives: FloatArray) -> list[float]:
        """The hypervolume reference in minimisation space (see ``reference``)."""
        signs = np.array([-sign for _, sign in self.objectives], dtype=np.float64)
        if self.reference is not None:
            return [float(v) for v in np.asarray(self.reference) * signs]
        worst, best = objectives.max(axis=0), objectives.min(axis=0)
        margin = np.where(worst > best, 0.1 * (worst - best), 0.1 * np.maximum(np.abs(worst), 1))
        return [float(v) for v in worst + margin]

    def front(self, run_space: GeneSpace, pop: Population, params: Parameters) -> IntArray:
        """Rows of the feasible first front of a population."""
        objectives = self.minimised(run_space, pop.genes, pop.fitness, pop.memory_kb, pop.speed_us)
        violation = ops.constraint_violation(
            pop.memory_kb, pop.speed_us, params.memory_limit_kb, params.speed_limit_us
        )
        ranks = non_dominated_ranks(objectives, violation)
        return np.flatnonzero((ranks == 0) & (violation <= 0)).astype(np.int64)

    def members(
        self, state: StrategyState, space: GeneSpace, pop: Population, params: Parameters
    ) -> IntArray:
        """The feasible first front (announced as reason ``front``)."""
        return self.front(space, pop, params)

    def member_table(
        self, state: StrategyState, space: GeneSpace, pop: Population, params: Parameters
    ) -> dict[str, Any]:
        """The front for a ``get_front`` reply: rows, each one's objectives, the reference."""
        rows = self.front(space, pop, params)
        signs = np.array([sign for _, sign in self.objectives], dtype=np.float64)
        values = columns(self.names, space, pop.genes, pop.fitness, pop.memory_kb, pop.speed_us)
        reference = state.get("reference")
        return {
            "kind": "front",
            "rows": rows,
            "objectives": self.config["objectives"],
            # Back in the objectives' own units (the state keeps them to minimise).
            "reference": None if reference is None else (-signs * np.asarray(reference)).tolist(),
            "columns": {"objectives": values[rows].tolist()},
        }

    def measures(
        self,
        state: StrategyState,
        space: GeneSpace,
        pop: Population,
        params: Parameters,
        members: IntArray,
    ) -> dict[str, float]:
        """``front_size`` and ``hypervolume`` of the feasible first front (the hypervolume
        only with up to three objectives: exact volumes grow exponentially beyond)."""
        if len(self.objectives) > EXACT_HYPERVOLUME:
            return {"front_size": int(members.size)}
        objectives = self.minimised(space, pop.genes, pop.fitness, pop.memory_kb, pop.speed_us)
        reference = np.array(state.get("reference") or self._reference(objectives))
        volume = hypervolume(objectives[members], reference) if members.size else 0.0
        return {"front_size": int(members.size), "hypervolume": volume}


register_strategy("nsga2", NSGA2)
