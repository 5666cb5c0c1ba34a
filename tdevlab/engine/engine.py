"""The Engine: a run of any strategy, with control, events, exact rollback and a run store.

Usage::

    engine = Engine(AgentDesign(), population_size=100, mutation_rate=0.15, seed=7, store="runs.db")
    for update in engine.run(generations=50):
        print(update.generation, update.best_fitness)
    engine.rollback(30)        # continuing reproduces the original 31, 32, ... exactly
    engine.export("data/my-run")

One generation (``step``) is: the strategy's ``ask``, evaluation of the offspring (uploaded
agents take the weakest places), the strategy's ``tell``, statistics, events, alerts, then
the whole generation written to the store in one transaction, and only then announced.
What the strategy does is in :mod:`tdevlab.engine.strategy`; run control (the one table of
transitions) in :mod:`tdevlab.engine.control`; the loops in :mod:`tdevlab.engine.loops`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tdevlab.engine import generation as gen
from tdevlab.engine.agents import AgentAccess, Pending, mutation_logs, shown
from tdevlab.engine.alerts import AlertDetector, AlertThresholds, alerts_from, rollback_events
from tdevlab.engine.control import ControlEvent, EngineState, RollbackResult
from tdevlab.engine.distributed import Evaluator, make_evaluator
from tdevlab.engine.evaluation import evaluate_batch
from tdevlab.engine.events import AgentUpdates, Alert, GenerationResult, LogEntry
from tdevlab.engine.ga import GeneticAlgorithm
from tdevlab.engine.genes import FloatArray
from tdevlab.engine.lineage import LineageAccess
from tdevlab.engine.loops import RunLoops
from tdevlab.engine.operators import IntArray
from tdevlab.engine.params import Parameters
from tdevlab.engine.population import Population, Snapshot
from tdevlab.engine.problems import AgentDesign, Evaluation, Problem, make_problem
from tdevlab.engine.resources import DEFAULT_POPULATION_MEMORY, affordable, population_limit
from tdevlab.engine.storage import RunStore, export_run, open_store
from tdevlab.engine.strategy import (
    RunView,
    Scored,
    Strategy,
    as_stored,
    check_keep,
    describe,
    make_strategy,
)
from tdevlab.exceptions import (
    EvolutionFailed,
    GenerationNotFound,
    InvalidParameters,
    InvalidState,
    TdevlabError,
)

__all__ = ["ControlEvent", "Engine", "EngineState"]

log = logging.getLogger("tdevlab.engine")


class Engine(RunLoops, AgentAccess, LineageAccess):
    """A run of a strategy (by default the genetic algorithm) over a population of agents.

    Args:
        problem: What to optimize (default :class:`AgentDesign`).
        strategy: What makes each generation: a :class:`Strategy` or a registered name
            (default :class:`GeneticAlgorithm`).
        seed: Seeds the run's ``numpy.random.Generator`` (PCG64); ``None`` draws one, which
            is recorded so the run can be reproduced.
        store: ``None`` keeps the run in memory (the newest ``keep_snapshots`` generations
            can be rolled back to); a path opens a SQLite run store; or a store object.
        run_id: Continue this stored run instead of starting a new one (see :meth:`open`).
        alert_thresholds: When alerts fire.
        log_sample: Mutation log entries per generation (a spread sample of the mutations).
        keep_snapshots: Snapshots kept in memory when ``store`` is ``None``.
        clock: Wall-clock source for event timestamps.
        executor: Evaluate each generation on this ``concurrent.futures.Executor`` (threads,
            processes, Dask's ``client.get_executor()``; a ``distributed.Client`` is taken
            as its executor), in chunks of rows; ``None`` evaluates in the engine's thread.
            The generations are the same with or without one. The engine does not shut the
            executor down. See :mod:`tdevlab.engine.distributed`.
        chunk_size: Most agents per executor task; by default two chunks per worker.
        max_population_memory: Bytes a generation's arrays may take, counting the working
            copies a generation makes; it bounds ``population_size`` (for 10 genes, the
            default 256 MiB allows about 230,000 agents). See :meth:`max_population`.
        **parameters: Initial :class:`Parameters` (population_size, mutation_rate, ...).

    Raises:
        InvalidParameters: for an unknown or invalid parameter or strategy, or an
            ``executor`` that is not one.
    """

    def __init__(
        self,
        problem: Problem | None = None,
        *,
        strategy: Strategy | str | None = None,
        seed: int | None = None,
        store: RunStore | str | Path | None = None,
        run_id: int | None = None,
        alert_thresholds: AlertThresholds | None = None,
        log_sample: int = 5,
        keep_snapshots: int | None = 512,
        clock: Callable[[], float] = time.time,
        executor: Any = None,
        chunk_size: int | None = None,
        max_population_memory: int = DEFAULT_POPULATION_MEMORY,
        **parameters: Any,
    ) -> None:
        self.problem: Problem = problem if problem is not None else AgentDesign()
        self.strategy: Strategy = _strategy(strategy)
        self._evaluator: Evaluator = make_evaluator(executor, chunk_size)
        self.space = self.problem.gene_space
        if (
            isinstance(max_population_memory, bool)
            or not isinstance(max_population_memory, int)
            or max_population_memory < 1
        ):
            raise InvalidParameters(
                f"max_population_memory={max_population_memory!r} must be a number of bytes"
            )
        self.max_population_memory = max_population_memory
        self.params: Parameters = self._checked(Parameters().replace(parameters))
        if log_sample < 0:
            raise InvalidParameters(f"log_sample={log_sample} must be >= 0")
        self.log_sample = int(log_sample)
        self.thresholds = alert_thresholds or AlertThresholds()
        self._clock = clock
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
        elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidParameters(f"seed={seed!r} must be a non-negative integer")
        self.seed = int(seed)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self.store, self._owns_store = open_store(store, keep_snapshots)

        self.population: Population | None = None
        self.generation = -1
        self.branch = 0
        self.run_id: int | None = run_id
        self._next_agent_id = 1
        self._next_alert_id = 1
        self._detector = AlertDetector(self.thresholds)
        self._strategy_state: dict[str, Any] = self.strategy.init(self.space, self.params)
        self._elite_ids: list[int] = []
        self._members = np.zeros(0, dtype=np.int64)  # the strategy's front or archive, by number
        self._made_members: tuple[object, IntArray] | None = None  # (state's list, as array)
        self._best_id = -1
        self._last_best = math.nan
        self._score_cache: tuple[Population, float, float, FloatArray] | None = None
        self._pending: list[Pending] = []  # uploaded agents waiting for the next generation
        #: Generation rows this run has recorded, all branches (the evolution stream's seq).
        self.recorded_generations = 0
        self._lock = threading.RLock()  # held by a step, a rollback, an upload
        super().__init__()
        if run_id is not None:
            self._restore_latest(run_id)

    # -- resources -------------------------------------------------------------------------

    @property
    def max_population(self) -> int:
        """The largest ``population_size`` this engine's memory budget allows its strategy."""
        return population_limit(self.strategy, self.max_population_memory, len(self.space.genes))

    def _checked(self, params: Parameters, strategy: Strategy | None = None) -> Parameters:
        """``params`` if the budget affords them with ``strategy`` (default: the run's)."""
        strategy = self.strategy if strategy is None else strategy
        return affordable(params, strategy, self.max_population_memory, len(self.space.genes))

    # -- construction from a store ---------------------------------------------------------

    @classmethod
    def open(
        cls,
        store: RunStore | str | Path,
        run_id: int,
        problem: Problem | None = None,
        **kwargs: Any,
    ) -> Engine:
        """Reopen a stored run at its last generation, ready to continue.

        Args:
            store: The store (or SQLite path) holding the run.
            run_id: Which run.
            problem: The problem object; built-in problems are rebuilt from the store.
            **kwargs: As for the constructor (``strategy`` defaults to the stored one).

        Raises:
            RunNotFound: if the run is not in the store.
            InvalidParameters: if the run used a custom problem or strategy and none is given.
        """
        opened, owned = open_store(store, None)
        info = opened.run_info(run_id)
        if problem is None:
            problem = make_problem(info.problem, **info.config.get("problem_config", {}))
        if kwargs.get("strategy") is None:
            stored = info.config.get("strategy", {"name": "ga"})
            kwargs["strategy"] = make_strategy(stored["name"], stored.get("config"))
        engine = cls(problem, seed=info.seed, store=opened, run_id=run_id, **kwargs)
        engine._owns_store = owned
        return engine

    def _restore_latest(self, run_id: int) -> None:
        info = self.store.run_info(run_id)
        stored_space = info.config.get("gene_space")
        if stored_space is not None and stored_space != self.space.describe():
            raise InvalidParameters(
                f"run {run_id} was made with another gene space than this problem's"
            )
        stored = info.config.get("strategy", {"name": "ga"})["name"]
        if stored != self.strategy.name:
            raise InvalidParameters(
                f"run {run_id} was made by strategy {stored!r}, not {self.strategy.name!r}"
            )
        self.branch = info.active_branch
        self.recorded_generations = self.store.count_generations(run_id)
        if info.last_generation is not None:
            self._restore(self.store.load_snapshot(run_id, self.branch, info.last_generation))
        # The active branch's snapshot may predate agents and alerts of an abandoned branch
        # (a rollback made by another process): number new ones above everything recorded.
        agents, alerts = self.store.id_high_water(run_id)
        self._next_agent_id = max(self._next_agent_id, agents + 1)
        self._next_alert_id = max(self._next_alert_id, alerts + 1)

    # -- generations -----------------------------------------------------------------------

    def step(self) -> GenerationResult:
        """Produce, store and announce one generation (generation 0 on a fresh engine).

        Returns:
            The generation's events.

        Raises:
            InvalidState: if a run loop is active (use pause/stop, or let it step).
            EvaluationError: if the problem fails; the engine stays at the last generation,
                and a retry starts from the same random state.
        """
        state = self.state
        if state in (EngineState.RUNNING, EngineState.PAUSED):
            raise InvalidState(
                f"cannot step by hand: the engine is {state.value} in a run loop",
                details={"state": state.value},
            )
        result = self._step()
        assert result is not None  # without a loop's token nothing can refuse the step
        return result

    def _step(self, token: int | None = None) -> GenerationResult | None:
        with self._lock:
            # A run loop's generation is decided under the lock: a stop, or a newer start,
            # that came while the loop waited for it leaves the loop without one, so no
            # generation follows a stop and a superseded loop never steps beside a new one.
            if token is not None and not self._run.running(token):
                return None
            rng_before = self.rng.bit_generator.state
            try:
                result, snapshot, new_ids, joined = self._make_generation()
                if self.run_id is None:
                    self.run_id = self._create_run()
                self.store.record_generation(self.run_id, snapshot, result, new_ids)
                self.recorded_generations += 1
            except BaseException:
                # Nothing of the failed generation is kept: the next try repeats it exactly.
                self.rng.bit_generator.state = rng_before
                raise
            del self._pending[:joined]
            self._commit(snapshot)
        self._announce(result)
        return result

    def ensure_run(self) -> int:
        """Create the run's record in the store now (it is otherwise made by the first step).

        Returns:
            The run id.
        """
        with self._lock:
            if self.run_id is None:
                self.run_id = self._create_run()
            return self.run_id

    def _create_run(self) -> int:
        config = {
            "parameters": self.params.to_dict(),
            "gene_space": self.space.describe(),
            "problem_config": dict(getattr(self.problem, "config", {})),
            "strategy": describe(self.strategy),
            "alert_thresholds": {
                f: getattr(self.thresholds, f) for f in self.thresholds.__struct_fields__
            },
            "log_sample": self.log_sample,
        }
        return self.store.create_run(
            seed=self.seed, problem=self.problem.name, config=config, created_at=self._clock()
        )

    def _evaluate(self, genes: FloatArray, first_id: int) -> tuple[Evaluation, float]:
        return evaluate_batch(self._evaluator, self.problem, genes, first_id, self.generation + 1)

    def _score_of(self, population: Population, p: Parameters) -> FloatArray:
        """Feasibility-first scores under the limits in force (cached from the last build)."""
        cached = self._score_cache
        limits = (p.memory_limit_kb, p.speed_limit_us)
        if cached is not None and cached[0] is population and cached[1:3] == limits:
            return cached[3]
        return gen.population_score(
            population.fitness, population.memory_kb, population.speed_us, p
        )[1]

    def _make_generation(
        self,
    ) -> tuple[GenerationResult, Snapshot, tuple[int, int], int]:
        p = self.params
        previous = self.population
        generation = self.generation + 1
        score = None if previous is None else self._score_of(previous, p)
        view = RunView(self.space, p, generation, previous, score)
        name = self.strategy.name
        try:
            offspring, state = self.strategy.ask(self.rng, self._strategy_state, view)
            genes = gen.check_offspring_genes(offspring.genes, self.space)
        except TdevlabError:
            raise
        except Exception as exc:
            raise EvolutionFailed(f"strategy {name!r} ask() failed: {exc}") from exc
        k = genes.shape[0]
        first = self._next_agent_id
        evaluation, ms = self._evaluate(genes, first)
        born = gen.Newborn(
            genes,
            evaluation,
            np.arange(first, first + k, dtype=np.int64),
            gen.parent_ids(previous, offspring.parent_a, k),
            gen.parent_ids(previous, offspring.parent_b, k),
        )
        if self._pending:
            # Uploads are written into the offspring's genes: never into an array the
            # strategy may share with the population (a snapshot must not change).
            born = born._replace(genes=genes.copy())
        born, joined = gen.inject_uploads(self._pending, born, p)
        if joined:  # tell sees the genes that were evaluated and will be kept
            offspring = dataclasses.replace(offspring, genes=born.genes)
        new_first = min([first, *(a.agent_id for a in self._pending[:joined])])
        violation, born_score = gen.population_score(*born.evaluation, p)
        scored = Scored(*born.evaluation, violation, born_score)
        try:
            keep, state = self.strategy.tell(self.rng, state, view, offspring, scored)
            state = as_stored(state)  # what a JSON store keeps and gives back
        except TdevlabError:
            raise
        except Exception as exc:
            raise EvolutionFailed(f"strategy {name!r} tell() failed: {exc}") from exc
        keep = check_keep(keep, (0 if previous is None else len(previous)) + k)
        block = None
        if offspring.carried is not None and offspring.block is not None and not joined:
            block = (offspring.carried, offspring.block)  # uploads changed genes: copy then
        population, pop_score, order = gen.assemble(previous, born, keep, generation, p, block)
        self._score_cache = (population, p.memory_limit_kb, p.speed_limit_us, pop_score)

        measures, member_updates, members = gen.strategy_outcome(
            strategy=self.strategy,
            state=state,
            problem=self.problem,
            population=population,
            previous=previous,
            params=p,
            previous_members=self._members,
            generation=generation,
            keep=keep,
        )
        mutation = offspring.mutation
        mutations = 0 if mutation is None else int(mutation.rows.size)
        crossed = offspring.crossed
        best = int(order[0])
        best_fitness = float(population.fitness[best])
        evolution = gen.evolution_update(
            problem=self.problem,
            population=population,
            best=best,
            generation=generation,
            last_best=self._last_best,
            evolved=k,
            mutations=mutations,
            crossovers=0 if crossed is None else int(np.count_nonzero(crossed)),
            run_id=self.run_id,
            branch=self.branch,
            params=p,
            evaluation_ms=ms,
            timestamp=self._clock(),
            measures=measures,
        )
        agents, elite_ids = gen.elite_changes(
            problem=self.problem,
            population=population,
            previous=previous,
            order=order,
            elite_count=p.elite_count,
            previous_elite=self._elite_ids,
            previous_best=self._best_id,
            generation=generation,
        )
        logs = (
            []
            if mutation is None
            else mutation_logs(self.space, mutation, born.agent_id, generation, self.log_sample)
        )
        detector = AlertDetector(self.thresholds, self._detector.state())
        findings = detector.observe(
            generation=generation,
            average_fitness=evolution.average_fitness,
            best_fitness=best_fitness,
            best_agent=evolution.best_agent_id,
            best_violation=gen.best_violation(population, best, p),
            worst_new_agents=lambda: gen.worst_agents(population, generation),
        )
        alerts = alerts_from(findings, self._next_alert_id, generation)
        new_last = first + k - 1
        snapshot_state = {
            "parameters": p.to_dict(),
            "rng": self.rng.bit_generator.state,
            "detector": detector.state(),
            "strategy": state,
            "members": gen.stored_members(members, population),
            "elite_ids": elite_ids,
            "best_id": int(population.agent_id[best]),
            "last_best": best_fitness,
            "next_agent_id": new_last + 1,
            "next_alert_id": self._next_alert_id + len(alerts),
        }
        if members is not None:  # `_commit` takes the array back instead of converting the list
            self._made_members = (snapshot_state["members"], members)
        source = gen.row_sources(previous, population, keep, block)
        snapshot = Snapshot(generation, self.branch, population, snapshot_state, source)
        updates = AgentUpdates([agents, member_updates])  # built when read
        result = GenerationResult(evolution=evolution, agents=updates, logs=logs, alerts=alerts)
        return result, snapshot, (new_first, new_last), joined

    def _commit(self, snapshot: Snapshot) -> None:
        """Make a recorded generation the engine's current state."""
        state = snapshot.state
        self.population = snapshot.population
        self.generation = snapshot.generation
        self._detector = AlertDetector(self.thresholds, state["detector"])
        stored = state.get("strategy")  # runs recorded before strategies had state
        self._strategy_state = (
            stored if stored is not None else self.strategy.init(self.space, self.params)
        )
        self._elite_ids = list(state["elite_ids"])
        members, made = state.get("members"), self._made_members
        self._members = (
            made[1]
            if made is not None and made[0] is members
            else gen.restored_members(members, snapshot.population)
        )
        self._best_id = int(state["best_id"])
        self._last_best = float(state["last_best"])
        self._next_agent_id = max(self._next_agent_id, int(state["next_agent_id"]))
        self._next_alert_id = max(self._next_alert_id, int(state["next_alert_id"]))

    def _restore(self, snapshot: Snapshot) -> None:
        """Restore a stored generation: population, parameters, RNG, detector, strategy."""
        params = Parameters.validated(snapshot.state["parameters"])
        with self._run.cond:
            self.params = params
        self._commit(snapshot)
        self.rng.bit_generator.state = snapshot.state["rng"]

    def _announce(self, result: GenerationResult) -> None:
        self._publish(result.evolution)
        if self._listeners:  # else the updates are not built for this
            for agent in result.agents:
                self._publish(agent)
        for entry in result.logs:
            self._publish(entry)
        for alert in result.alerts:
            self._publish(alert)

    def _record_side_events(
        self, logs: list[LogEntry], alerts: list[Alert], generation: int | None = None
    ) -> None:
        if self.run_id is not None:
            where = self.generation if generation is None else generation
            self.store.record_events(self.run_id, self.branch, where, logs, alerts)
        for entry in logs:
            self._publish(entry)
        for alert in alerts:
            self._publish(alert)

    # -- rollback --------------------------------------------------------------------------

    def rollback(self, generation: int) -> RollbackResult:
        """Return to a past generation of the current lineage, exactly.

        The population, parameters, counters, alert state, strategy state and random
        generator state of that generation are restored, so continuing with the parameters
        the original run went on with reproduces its generations bit for bit (new agents
        get new ids: ids are never reused in a run). The parameters are those generation
        ``generation`` was made with (a change made after it is undone, and announced as a
        ``ControlEvent`` with action ``rollback``). The abandoned generations stay in the
        store under their branch; a new branch continues. A running loop continues from
        there after the generation in progress.

        Returns:
            The generation and branch the run is now at, and its state.

        Raises:
            InvalidParameters: if ``generation`` is not an integer.
            GenerationNotFound: if the generation is not in the current lineage or no longer
                kept; the engine is unchanged. ``details`` has the run's ``state``.
        """
        if isinstance(generation, bool) or not isinstance(generation, int | np.integer):
            raise InvalidParameters(f"generation must be an integer, got {shown(generation)}")
        generation = int(generation)
        with self._run.moving("rollback", self.state, exclusive=False), self._lock:
            if not 0 <= generation <= self.generation or self.run_id is None:
                raise GenerationNotFound(
                    f"cannot roll back to generation {generation}: the run is at generation "
                    f"{self.generation}",
                    details={
                        "generation": generation,
                        "current_generation": self.generation,
                        "state": self.state.value,
                    },
                )
            snapshot = self.store.load_snapshot(self.run_id, self.branch, generation)
            if generation == self.generation:
                return RollbackResult(generation, self.branch, self.state)
            abandoned = (self.branch, generation + 1, self.generation)
            self.branch = self.store.create_branch(self.run_id, self.branch, generation)
            self._restore(snapshot)
            entry, alert = rollback_events(generation, self.branch, abandoned, self._next_alert_id)
            self._next_alert_id += 1
            self._record_side_events([entry], [alert])
            state = self.state
            self._publish(ControlEvent("rollback", state, state, generation, self.params.to_dict()))
            return RollbackResult(generation, self.branch, state)

    # -- export, close ---------------------------------------------------------------------

    def export(self, path: str | Path, *, format: str = "parquet") -> Path:
        """Write this run as a dataset directory (see :func:`tdevlab.store.export_run`).

        Returns:
            The dataset directory.

        Raises:
            InvalidState: before the first generation.
        """
        if self.run_id is None:
            raise InvalidState("nothing to export: the engine has not produced a generation yet")
        return export_run(self.store, self.run_id, path, format, self.problem)

    def close(self) -> None:
        """Close the store if the engine opened it, and release the problem's copies on workers.

        An executor given to the engine is not shut down: it belongs to the caller.
        """
        self._evaluator.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<Engine {self.problem.name} strategy={self.strategy.name} run={self.run_id} "
            f"generation={self.generation} branch={self.branch} state={self.state.value}>"
        )


def _strategy(strategy: Strategy | str | None) -> Strategy:
    if strategy is None:
        return GeneticAlgorithm()
    if isinstance(strategy, str):
        return make_strategy(strategy)
    if not isinstance(strategy, Strategy):
        raise InvalidParameters(
            f"strategy must have name, init, ask and tell (see tdevlab.engine.strategy), "
            f"got {type(strategy).__name__}"
        )
    return strategy
