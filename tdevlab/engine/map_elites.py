"""MAP-Elites (Mouret & Clune 2015) as a strategy: a diverse archive of good agents, live.

The archive is a grid over two (or more) behaviour descriptors, each a problem output or a
gene by name (default: ``memory_kb`` x ``speed_us``); each cell keeps its best agent. The
run's population *is* the archive (one agent per occupied cell), so a snapshot stores it,
rollback restores it exactly, and the events, store and datasets show it like any
population. Each generation an emitter makes ``population_size`` new agents from elites
chosen uniformly: ``gaussian`` (every gene mutated with probability ``mutation_rate`` by
``mutation_sigma`` of its span, as pyribs' ``GaussianEmitter``) or ``iso_line``
(Vassiliades & Mouret 2018: ``x + sigma_iso N(0, I) + sigma_line N(0, 1) (y - x)`` towards a
second elite). A cell is won feasibility-first: a feasible agent beats an infeasible one,
then higher fitness (smaller violation between infeasible ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tdevlab.engine import operators as ops
from tdevlab.engine.genes import FloatArray, GeneSpace
from tdevlab.engine.objectives import check_names, columns
from tdevlab.engine.operators import IntArray
from tdevlab.engine.params import Parameters
from tdevlab.engine.population import Population
from tdevlab.engine.strategy import (
    Offspring,
    RunView,
    Scored,
    StrategyState,
    register_strategy,
)
from tdevlab.exceptions import InvalidParameters

__all__ = ["MapElites"]

EMITTERS = ("gaussian", "iso_line")
#: The most cells a grid may have (the engine's memory budget may allow fewer).
MAX_CELLS = 1_000_000


class MapElites:
    """A grid archive of elites over behaviour descriptors.

    Args:
        descriptors: Names of the descriptors (outputs or genes).
        bins: Cells per descriptor (default 20 each).
        ranges: ``(low, high)`` per descriptor; values outside fall in the edge cells.
            ``None`` for ``memory_kb`` / ``speed_us``: from 0 to twice the run's limit.
        emitter: ``"gaussian"`` or ``"iso_line"``.
        iso_sigma: For ``iso_line``: the isotropic step, as a fraction of each gene's span.
        line_sigma: For ``iso_line``: the step along the line to the second elite.
        qd_offset: Subtracted from each elite's fitness in the QD score (elites below it
            count 0); ``None``: the lowest fitness of generation 0, fixed for the run.
        x0: A genome (``{gene: value}``) the first batch is drawn around, as pyribs'
            emitters start from ``x0``; ``None``: the first batch is uniform over the space.
        initial_sigma: With ``x0``: the first batch's gaussian step, as a fraction of each
            gene's span (categorical genes keep x0's choice).

    Raises:
        InvalidParameters: naming a malformed setting; unknown descriptor names are
            refused when the strategy meets the problem.
    """

    name = "map-elites"

    def __init__(
        self,
        descriptors: Sequence[str] = ("memory_kb", "speed_us"),
        bins: Sequence[int] | None = None,
        ranges: Sequence[Sequence[float]] | None = None,
        emitter: str = "gaussian",
        iso_sigma: float = 0.01,
        line_sigma: float = 0.2,
        x0: Mapping[str, Any] | None = None,
        initial_sigma: float = 0.05,
        qd_offset: float | None = None,
    ) -> None:
        self.descriptors = [str(d) for d in descriptors]
        if not 1 <= len(self.descriptors) <= 4:
            raise InvalidParameters(f"descriptors={self.descriptors!r}: give 1 to 4 names")
        if bins is None:
            bins = [20] * len(self.descriptors)
        if len(bins) != len(self.descriptors) or not all(
            isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 1000 for b in bins
        ):
            raise InvalidParameters(
                f"bins={list(bins)!r}: one integer within [1, 1000] per descriptor"
            )
        self.bins = [int(b) for b in bins]
        if int(np.prod(self.bins)) > MAX_CELLS:
            raise InvalidParameters(f"bins={self.bins!r} make more than {MAX_CELLS} cells")
        self._strides = np.array(
            [int(np.prod(self.bins[i + 1 :])) for i in range(len(self.bins))], dtype=np.int64
        )
        self.ranges = None if ranges is None else [_range(r) for r in ranges]
        if self.ranges is not None and len(self.ranges) != len(self.descriptors):
            raise InvalidParameters("ranges: one (low, high) per descriptor")
        if emitter not in EMITTERS:
            raise InvalidParameters(f"emitter={emitter!r} must be one of {list(EMITTERS)}")
        sigmas = (
            ("iso_sigma", iso_sigma),
            ("line_sigma", line_sigma),
            ("initial_sigma", initial_sigma),
        )
        for label, value in sigmas:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= 10
            ):
                raise InvalidParameters(f"{label}={value!r} must be a number within [0, 10]")
        self.emitter = emitter
        self.iso_sigma, self.line_sigma = float(iso_sigma), float(line_sigma)
        self.x0 = None if x0 is None else dict(x0)
        self.initial_sigma = float(initial_sigma)
        self._x0_row: FloatArray | None = None
        # (descriptor values, grid bounds, cells) of the rows the last tell kept.
        self._archive_cells: tuple[FloatArray, FloatArray, IntArray] | None = None
        if qd_offset is not None and not (
            isinstance(qd_offset, int | float) and np.isfinite(qd_offset)
        ):
            raise InvalidParameters(f"qd_offset={qd_offset!r} must be a finite number")
        self.qd_offset = None if qd_offset is None else float(qd_offset)
        #: Agents entering and leaving the archive are announced with this reason.
        self.member_reason = "archive"
        self.config: dict[str, Any] = {
            "qd_offset": self.qd_offset,
            "x0": self.x0,
            "initial_sigma": self.initial_sigma,
            "descriptors": self.descriptors,
            "bins": self.bins,
            "ranges": self.ranges,
            "emitter": emitter,
            "iso_sigma": self.iso_sigma,
            "line_sigma": self.line_sigma,
        }

    @property
    def cells(self) -> int:
        """How many cells the grid has."""
        return int(np.prod(self.bins))

    def init(self, space: GeneSpace, params: Parameters) -> StrategyState:
        """Check the descriptors against the problem; no state (the archive is the population).

        Raises:
            InvalidParameters: naming an unknown descriptor, or one without a range.
        """
        check_names(self.descriptors, space, "descriptor")
        if self.x0 is not None:
            self._x0_row = space.encode(self.x0)  # names a bad gene
        if self.ranges is None:
            missing = [d for d in self.descriptors if d not in ("memory_kb", "speed_us")]
            if missing:
                raise InvalidParameters(f"descriptor(s) {missing} need ranges=")
        return {}

    def grid_ranges(self, params: Parameters) -> FloatArray:
        """``(descriptors, 2)`` low/high of the grid under the run's limits."""
        if self.ranges is not None:
            return np.array(self.ranges, dtype=np.float64)
        limit = {"memory_kb": params.memory_limit_kb, "speed_us": params.speed_limit_us}
        return np.array([[0.0, 2.0 * limit[d]] for d in self.descriptors], dtype=np.float64)

    def cell_of(self, descriptors: FloatArray, params: Parameters) -> IntArray:
        """The flat cell index of each row of descriptor values."""
        bounds = self.grid_ranges(params)
        bins = np.array(self.bins)
        scaled = (descriptors - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0])
        # np.clip's result, without its dispatch cost (a tenth of a tell at batch 100).
        index = np.minimum(np.maximum(np.floor(scaled * bins), 0), bins - 1).astype(np.int64)
        # Row-major flat index (np.ravel_multi_index's, without its per-call setup).
        flat: IntArray = index @ self._strides
        return flat

    def ask(
        self, rng: np.random.Generator, state: StrategyState, run: RunView
    ) -> tuple[Offspring, StrategyState]:
        """Mutants of uniformly chosen elites (a random batch to start)."""
        p = run.params
        n = p.population_size
        if run.population is None:
            return Offspring(self._first_batch(rng, run.space, n)), state
        size = len(run.population)
        parents = rng.integers(0, size, n)
        genes = run.population.genes
        if self.emitter == "gaussian":
            children, mutation = ops.mutate(
                rng, genes[parents], p.mutation_rate, p.mutation_sigma, run.space
            )
            return Offspring(children, parent_a=parents, mutation=mutation), state
        others = rng.integers(0, size, n)
        search = run.space.to_search(genes) if run.space.any_log else genes
        x, y = search[parents], search[others]
        span = run.space.search_span
        step = self.iso_sigma * span * rng.standard_normal(x.shape)
        line = self.line_sigma * rng.standard_normal((n, 1)) * (y - x)
        children = run.space.from_search(x + step + line)
        if run.space.any_categorical:
            cols = run.space.categorical_columns
            children[:, cols] = genes[parents][:, cols]
        return Offspring(children, parent_a=parents, parent_b=others), state

    def _first_batch(self, rng: np.random.Generator, space: GeneSpace, n: int) -> FloatArray:
        if self._x0_row is None:
            return space.random(rng, n)
        center = self._x0_row[None, :]
        search = space.to_search(center) if space.any_log else center.copy()
        step = self.initial_sigma * space.search_span * rng.standard_normal((n, len(space)))
        genes = space.from_search(search + step)
        if space.any_categorical:
            cols = space.categorical_columns
            genes[:, cols] = center[:, cols]
        return genes

    def tell(
        self,
        rng: np.random.Generator,
        state: StrategyState,
        run: RunView,
        offspring: Offspring,
        scored: Scored,
    ) -> tuple[IntArray, StrategyState]:
        """The best agent of every occupied cell, old elites and offspring competing.

        Returns the winners ordered by cell. Per cell, best first: feasible, smaller
        violation, higher fitness; then the older row (old elites before offspring, each
        in their order), as one stable sort of everyone would rank them.
        """
        space, p = run.space, run.params
        pop = run.population
        values = columns(
            self.descriptors,
            space,
            offspring.genes,
            scored.fitness,
            scored.memory_kb,
            scored.speed_us,
        )
        cell = self.cell_of(values, p)
        bounds = self.grid_ranges(p)
        if pop is None:
            keep = _cell_winners(cell, scored.fitness, scored.violation)
            offset = float(scored.fitness.min())
            old_values, old_cell = values[:0], cell[:0]
        else:
            old_violation = ops.constraint_violation(
                pop.memory_kb, pop.speed_us, p.memory_limit_kb, p.speed_limit_us
            )
            old_values = columns(
                self.descriptors, space, pop.genes, pop.fitness, pop.memory_kb, pop.speed_us
            )
            old_cell = self._cells_of_archive(old_values, bounds, p)
            keep = _archive_update(
                (old_cell, pop.fitness, old_violation),
                (cell, scored.fitness, scored.violation),
            )
            offset = min(float(pop.fitness.min()), float(scored.fitness.min()))
        # The kept rows' descriptor values and cells: the next tell's archive, if nothing
        # else changes it, need not be placed in the grid again (a tenth of a generation).
        self._archive_cells = (
            ops.take_candidates(old_values, values, keep),
            bounds,
            ops.take_candidates(old_cell, cell, keep),
        )
        if "qd_offset" not in state:
            state = {**state, "qd_offset": self.qd_offset if self.qd_offset is not None else offset}
        return keep, state

    def _cells_of_archive(self, values: FloatArray, bounds: FloatArray, p: Parameters) -> IntArray:
        """:meth:`cell_of` the archive's rows, taken from the last tell when that tell made
        rows with exactly these descriptor values under the same grid (checked by value:
        a rollback, another run or changed limits place the rows again)."""
        made = self._archive_cells
        if (
            made is not None
            and made[0].shape == values.shape
            and np.array_equal(made[1], bounds)
            and np.array_equal(made[0], values)
        ):
            return made[2]
        return self.cell_of(values, p)

    def members(
        self, state: StrategyState, space: GeneSpace, pop: Population, params: Parameters
    ) -> IntArray:
        """The whole archive (announced as reason ``archive``)."""
        return np.arange(len(pop), dtype=np.int64)

    def member_table(
        self, state: StrategyState, space: GeneSpace, pop: Population, params: Parameters
    ) -> dict[str, Any]:
        """The archive for a ``get_archive`` reply: every elite with its cell and descriptors."""
        values = columns(
            self.descriptors, space, pop.genes, pop.fitness, pop.memory_kb, pop.speed_us
        )
        cells = np.unravel_index(self.cell_of(values, params), tuple(self.bins))
        return {
            "kind": "archive",
            "rows": np.arange(len(pop), dtype=np.int64),
            "descriptors": self.descriptors,
            "bins": self.bins,
            "ranges": self.grid_ranges(params).tolist(),
            "columns": {
                "descriptors": values.tolist(),
                "cell": np.column_stack(cells).tolist(),
            },
        }

    def measures(
        self,
        state: StrategyState,
        space: GeneSpace,
        pop: Population,
        params: Parameters,
        members: IntArray,
    ) -> dict[str, float]:
        """``archive_coverage`` (share of cells filled) and ``qd_score`` (feasible elites'
        fitness above the offset, summed)."""
        offset = float(state.get("qd_offset", 0.0))
        violation = ops.constraint_violation(
            pop.memory_kb, pop.speed_us, params.memory_limit_kb, params.speed_limit_us
        )
        # Every elite feasible (the usual case): no selection to copy.
        fitness = pop.fitness if not violation.any() else pop.fitness[violation <= 0]
        qd = float(np.maximum(fitness - offset, 0.0).sum())
        return {"archive_coverage": len(pop) / self.cells, "qd_score": qd}


def _cell_winners(cell: IntArray, fitness: FloatArray, violation: FloatArray) -> IntArray:
    """The best row of each cell (see :meth:`MapElites.tell`), ordered by cell."""
    if cell.size == 0:
        return np.zeros(0, dtype=np.int64)
    if violation.any():
        order = np.lexsort((-fitness, violation, cell))
    else:
        order = np.lexsort((-fitness, cell))
    ordered = cell[order]
    first = np.empty(ordered.size, dtype=np.bool_)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    winners: IntArray = order[first].astype(np.int64)
    return winners


Columns = tuple[IntArray, FloatArray, FloatArray]  # cell, fitness, violation of some rows


def _archive_update(archive: Columns, offspring: Columns) -> IntArray:
    """:func:`_cell_winners` of the archive's rows then the offspring's (rows ``n + j``),
    where the archive holds one row per cell in cell order (what a tell leaves): only the
    offspring are sorted, and each cell's best offspring meets the elite there.

    Anything else (cells shifted by changed limits, a population from elsewhere) is sorted
    whole: the same result, at the cost of sorting the archive.
    """
    old_cell, old_fitness, old_violation = archive
    cell, fitness, violation = offspring
    n = old_cell.size
    if n > 1 and not bool((old_cell[1:] > old_cell[:-1]).all()):
        return _cell_winners(
            np.concatenate([old_cell, cell]),
            np.concatenate([old_fitness, fitness]),
            np.concatenate([old_violation, violation]),
        )
    best = _cell_winners(cell, fitness, violation)  # each cell's best offspring, by cell
    if n == 0:
        return n + best
    where = np.searchsorted(old_cell, cell[best])
    at = np.minimum(where, n - 1)
    taken = (where < n) & (old_cell[at] == cell[best])
    # The offspring wins a taken cell only if strictly better (a tie keeps the older elite).
    v, f = violation[best], fitness[best]
    better = (v < old_violation[at]) | ((v == old_violation[at]) & (f > old_fitness[at]))
    keep = np.arange(n, dtype=np.int64)
    wins = taken & better
    keep[at[wins]] = n + best[wins]
    # New cells, inserted in cell order: the j-th new one lands j places after where it
    # would go among the old cells (np.insert's result, without its setup).
    fresh = np.flatnonzero(~taken)
    out = np.empty(n + fresh.size, dtype=np.int64)
    placed = where[fresh] + np.arange(fresh.size)
    out[placed] = n + best[fresh]
    old = np.ones(out.size, dtype=np.bool_)
    old[placed] = False
    out[old] = keep
    return out


def _range(pair: Sequence[float]) -> list[float]:
    if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
        raise InvalidParameters(f"range {str(pair)[:64]!r} must be (low, high)")
    try:
        low, high = float(pair[0]), float(pair[1])
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidParameters(f"range {str(pair)[:64]!r} must hold two numbers") from exc
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise InvalidParameters(f"range {pair!r} must be finite with low < high")
    return [low, high]


register_strategy("map-elites", MapElites)
