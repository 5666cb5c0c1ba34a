"""The evolution engine: generations over whole arrays, exact rollback, events, a run store.

Usage::

    engine = Engine(AgentDesign(), population_size=100, mutation_rate=0.15, seed=7, store="runs.db")
    for update in engine.run(generations=50):
        print(update.generation, update.best_fitness)
    engine.rollback(30)        # continuing reproduces the original 31, 32, ... exactly
    engine.export("data/my-run")

One generation (``step``) is: feasibility-first scores, elites, tournament selection,
crossover, mutation, evaluation of the children, statistics, events, then the whole
generation written to the store in one transaction, and only then announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from tdevlab.engine import operators as ops
from tdevlab.engine.alerts import AlertDetector, AlertThresholds
from tdevlab.engine.code import parse_agent_code, render_agent_code
from tdevlab.engine.distributed import Evaluator, make_evaluator
from tdevlab.engine.events import (
    ELITE,
    EVOLVING,
    RETIRED,
    STATUS_NAMES,
    VIOLATING,
    AgentUpdate,
    Alert,
    EvolutionUpdate,
    GenerationResult,
    LogEntry,
)
from tdevlab.engine.genes import FloatArray
from tdevlab.engine.params import Parameters
from tdevlab.engine.population import Population, Snapshot
from tdevlab.engine.problems import AgentDesign, Problem, check_evaluation, make_problem
from tdevlab.exceptions import (
    AgentNotFound,
    ConstraintViolation,
    EvaluationError,
    EvolutionFailed,
    GenerationNotFound,
    InvalidParameters,
    InvalidState,
)

if TYPE_CHECKING:
    from tdevlab.store.base import RunStoreBase

__all__ = ["ControlEvent", "Engine", "EngineState"]

log = logging.getLogger("tdevlab.engine")


class EngineState(enum.Enum):
    """Where an engine is; the allowed control transitions are in ``_TRANSITIONS``."""

    IDLE = "idle"  # created, or a run() finished its generations
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FAILED = "failed"


# action -> (states it is valid in, state it leads to)
_TRANSITIONS: dict[str, tuple[frozenset[EngineState], EngineState]] = {
    "start": (
        frozenset({EngineState.IDLE, EngineState.STOPPED, EngineState.FAILED}),
        EngineState.RUNNING,
    ),
    "pause": (frozenset({EngineState.RUNNING}), EngineState.PAUSED),
    "resume": (frozenset({EngineState.PAUSED}), EngineState.RUNNING),
    "stop": (frozenset({EngineState.RUNNING, EngineState.PAUSED}), EngineState.STOPPED),
}


class ControlEvent:
    """A state change of the engine (published to listeners, the API's control channel)."""

    __slots__ = ("action", "generation", "parameters", "previous_state", "state", "timestamp")

    def __init__(
        self,
        action: str,
        state: EngineState,
        previous_state: EngineState,
        generation: int,
        parameters: dict[str, Any],
    ) -> None:
        self.action = action
        self.state = state
        self.previous_state = previous_state
        self.generation = generation
        self.parameters = parameters
        self.timestamp = time.time()

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a plain dict."""
        return {
            "action": self.action,
            "state": self.state.value,
            "previous_state": self.previous_state.value,
            "generation": self.generation,
            "parameters": self.parameters,
        }

    def __repr__(self) -> str:
        return f"ControlEvent({self.to_dict()!r})"


Listener = Callable[[Any], None]


class Engine:
    """A genetic algorithm over a population of agents.

    Args:
        problem: What to optimize (default :class:`AgentDesign`).
        seed: Seeds the run's ``numpy.random.Generator`` (PCG64); ``None`` draws one, which
            is recorded so the run can be reproduced.
        store: ``None`` keeps the run in memory (the newest ``keep_snapshots`` generations
            can be rolled back to); a path opens a SQLite run store; or a store object.
        run_id: Continue this stored run instead of starting a new one (see :meth:`resume`).
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
        **parameters: Initial :class:`Parameters` (population_size, mutation_rate, ...).

    Raises:
        InvalidParameters: for an unknown or invalid parameter, or an ``executor`` that is
            not one.
    """

    def __init__(
        self,
        problem: Problem | None = None,
        *,
        seed: int | None = None,
        store: RunStoreBase | str | Path | None = None,
        run_id: int | None = None,
        alert_thresholds: AlertThresholds | None = None,
        log_sample: int = 5,
        keep_snapshots: int | None = 512,
        clock: Callable[[], float] = time.time,
        executor: Any = None,
        chunk_size: int | None = None,
        **parameters: Any,
    ) -> None:
        self.problem: Problem = problem if problem is not None else AgentDesign()
        self._evaluator: Evaluator = make_evaluator(executor, chunk_size)
        self.space = self.problem.gene_space
        self.params: Parameters = Parameters().replace(parameters)
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
        self.store: RunStoreBase = _open_store(store, keep_snapshots)
        self._owns_store = not hasattr(store, "record_generation")

        self.population: Population | None = None
        self.generation = -1
        self.branch = 0
        self.run_id: int | None = run_id
        self._next_agent_id = 1
        self._next_alert_id = 1
        self._detector = AlertDetector(self.thresholds)
        self._elite_ids: list[int] = []
        self._best_id = -1
        self._score_cache: tuple[Population, float, float, FloatArray] | None = None
        self._pending: list[_Pending] = []  # uploaded agents waiting for the next generation
        #: Generation rows this run has recorded, all branches (the evolution stream's seq).
        self.recorded_generations = 0
        self._last_best = math.nan
        self._listeners: list[Listener] = []

        self._lock = threading.RLock()  # held by a step, a rollback, a parameter change
        self._cond = threading.Condition()
        self._state = EngineState.IDLE
        self._async_wake: asyncio.Event | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._sync_thread: int | None = None
        if run_id is not None:
            self._restore_latest(run_id)

    # -- construction from a store ---------------------------------------------------------

    @classmethod
    def open(
        cls,
        store: RunStoreBase | str | Path,
        run_id: int,
        problem: Problem | None = None,
        **kwargs: Any,
    ) -> Engine:
        """Reopen a stored run at its last generation, ready to continue.

        Args:
            store: The store (or SQLite path) holding the run.
            run_id: Which run.
            problem: The problem object; built-in problems are rebuilt from the store.

        Raises:
            RunNotFound: if the run is not in the store.
            InvalidParameters: if the run used a custom problem and none is given.
        """
        opened = _open_store(store, None)
        info = opened.run_info(run_id)
        if problem is None:
            problem = make_problem(info.problem, **info.config.get("problem_config", {}))
        engine = cls(problem, seed=info.seed, store=opened, run_id=run_id, **kwargs)
        engine._owns_store = not hasattr(store, "record_generation")
        return engine

    def _restore_latest(self, run_id: int) -> None:
        info = self.store.run_info(run_id)
        stored_space = info.config.get("gene_space")
        if stored_space is not None and stored_space != self.space.describe():
            raise InvalidParameters(
                f"run {run_id} was made with another gene space than this problem's"
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

    # -- listeners and state ---------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event, in order; return an unsubscribe function.

        Events are :class:`EvolutionUpdate`, :class:`AgentUpdate`, :class:`LogEntry`,
        :class:`Alert` and :class:`ControlEvent` objects. A generation's events are
        delivered after it is stored. Listeners run on the thread that runs the step and
        must not block; an exception in a listener is logged and does not stop the run.
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    @property
    def state(self) -> EngineState:
        """The engine's control state."""
        return self._state

    def _publish(self, event: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("engine listener %r failed", listener)

    def _transition(self, action: str) -> None:
        valid, target = _TRANSITIONS[action]
        with self._cond:
            previous = self._state
            if previous not in valid:
                raise InvalidState(
                    f"cannot {action}: the engine is {previous.value}",
                    details={"state": previous.value, "action": action},
                )
            self._state = target
            self._cond.notify_all()
        self._wake_async()
        self._publish(
            ControlEvent(action, target, previous, self.generation, self.params.to_dict())
        )
        if self.run_id is not None:
            self.store.set_status(self.run_id, target.value)

    def _wake_async(self) -> None:
        loop, event = self._async_loop, self._async_wake
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def pause(self) -> None:
        """Pause a running loop after the generation in progress.

        A synchronous :meth:`run` waits while paused, so it must be paused from another
        thread; break out of its loop instead, or use :meth:`run_async`.

        Raises:
            InvalidState: if the engine is not running, or if called from the thread that is
                iterating a synchronous :meth:`run` (it could never be resumed).
        """
        if self._sync_thread == threading.get_ident():
            raise InvalidState(
                "cannot pause a synchronous run() from its own thread: it would wait forever; "
                "break out of the loop, or use run_async()",
                details={"state": self._state.value},
            )
        self._transition("pause")

    def resume(self) -> None:
        """Resume a paused loop.

        Raises:
            InvalidState: if the engine is not paused.
        """
        self._transition("resume")

    def stop(self) -> None:
        """Stop a running or paused loop after the generation in progress.

        Raises:
            InvalidState: if the engine is neither running nor paused.
        """
        self._transition("stop")

    # -- parameters ------------------------------------------------------------------------

    def set_parameters(self, **changes: Any) -> Parameters:
        """Change parameters for the next generation; all are validated before any applies.

        Returns:
            The parameters now in force.

        Raises:
            InvalidParameters: naming the unknown or invalid parameter; nothing changes.
        """
        event: ControlEvent | None
        with self._lock:
            new = self.params.replace(changes)
            if new != self.params:
                changed = {k: v for k, v in new.to_dict().items() if self.params.to_dict()[k] != v}
                self.params = new
                entry = LogEntry(
                    level="info",
                    message=f"Parameters changed: {changed}",
                    details={"parameters": changed},
                    generation=self.generation,
                )
                self._record_side_events([entry], [])
                state = self._state
                event = ControlEvent(
                    "set_parameters", state, state, self.generation, self.params.to_dict()
                )
            else:
                event = None
            params = self.params
        if event is not None:
            # Listeners (the server's control channel) learn the new parameters too.
            self._publish(event)
        return params

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
        if self._state in (EngineState.RUNNING, EngineState.PAUSED):
            raise InvalidState(
                f"cannot step by hand: the engine is {self._state.value} in a run loop",
                details={"state": self._state.value},
            )
        return self._step()

    def _step(self) -> GenerationResult:
        with self._lock:
            rng_before = self.rng.bit_generator.state
            try:
                if self.population is None:
                    result, snapshot, new_ids = self._initialize()
                else:
                    result, snapshot, new_ids = self._next_generation(self.population)
                if self.run_id is None:
                    self.run_id = self._create_run()
                self.store.record_generation(self.run_id, snapshot, result, new_ids)
                self.recorded_generations += 1
            except BaseException:
                # Nothing of the failed generation is kept: the next try repeats it exactly.
                self.rng.bit_generator.state = rng_before
                raise
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
            "alert_thresholds": {
                f: getattr(self.thresholds, f) for f in self.thresholds.__struct_fields__
            },
            "log_sample": self.log_sample,
        }
        return self.store.create_run(
            seed=self.seed, problem=self.problem.name, config=config, created_at=self._clock()
        )

    def _evaluate(self, genes: FloatArray, first_id: int) -> tuple[Any, float]:
        started = time.perf_counter()
        ids = np.arange(first_id, first_id + genes.shape[0])
        try:
            raw = self._evaluator.evaluate(self.problem, genes, first_id)
        except EvaluationError as exc:
            row = exc.details.get("row")
            if row is not None and "agent_id" not in exc.details:
                exc.details["agent_id"] = f"agent-{first_id + int(row)}"
                exc.message = f"{exc.message} [agent-{first_id + int(row)}]"
                exc.args = (exc.message,)
            exc.details.setdefault("generation", self.generation + 1)
            raise
        except Exception as exc:
            raise EvaluationError(
                f"{type(self.problem).__name__}.evaluate failed: {type(exc).__name__}: {exc}",
                details={
                    "reason": f"{type(exc).__name__}: {exc}",
                    "generation": self.generation + 1,
                },
            ) from exc
        evaluation = check_evaluation(raw, genes.shape[0], ids)
        return evaluation, (time.perf_counter() - started) * 1000.0

    def _initialize(self) -> tuple[GenerationResult, Snapshot, tuple[int, int]]:
        p = self.params
        genes = self.space.random(self.rng, p.population_size)
        first = self._next_agent_id
        evaluation, ms = self._evaluate(genes, first)
        n = p.population_size
        ids = np.arange(first, first + n, dtype=np.int64)
        none = np.full(n, -1, dtype=np.int64)
        evaluation, new_first = self._inject(genes, evaluation, ids, none, none.copy(), first)
        population, order = self._build(
            genes, evaluation, ids, none, none, np.zeros(n, dtype=np.int64)
        )
        no_mutation = ops.Mutation(*(np.empty(0, dtype=np.int64),) * 2, *(np.empty(0),) * 2)
        return self._finish(0, population, order, None, n, 0, 0, ms, no_mutation, new_first)

    def _next_generation(
        self, pop: Population
    ) -> tuple[GenerationResult, Snapshot, tuple[int, int]]:
        p = self.params
        score = self._score_of(pop)
        elites = ops.elite_indices(score, p.elite_count)
        n_elite = elites.size
        n_children = p.population_size - n_elite
        parents = ops.tournament_select(self.rng, score, 2 * n_children, p.tournament_size)
        first, second = parents[:n_children], parents[n_children:]
        # Elites ride through crossover paired with themselves (which leaves them unchanged),
        # so the new genes matrix is built in one piece, with no concatenation.
        rows_a = np.concatenate([elites, first])
        rows_b = np.concatenate([elites, second])
        if p.crossover == "blend":
            genes, crossed = ops.blend_crossover(
                self.rng,
                pop.genes[rows_a],
                pop.genes[rows_b],
                p.crossover_rate,
                self.space,
                p.blend_alpha,
            )
        else:
            genes, crossed = ops.uniform_crossover(
                self.rng, pop.genes[rows_a], pop.genes[rows_b], p.crossover_rate, inplace=True
            )
        crossed = crossed[n_elite:]
        children = genes[n_elite:]  # a view: mutation writes into `genes`
        _, mutation = ops.mutate(
            self.rng, children, p.mutation_rate, p.mutation_sigma, self.space, inplace=True
        )
        first_id = self._next_agent_id
        evaluation, ms = self._evaluate(children, first_id)

        generation = self.generation + 1
        child_ids = np.arange(first_id, first_id + n_children, dtype=np.int64)
        child_a = pop.agent_id[first]
        child_b = np.where(crossed, pop.agent_id[second], -1)
        evaluation, new_first = self._inject(
            children, evaluation, child_ids, child_a, child_b, first_id
        )
        population, order = self._build(
            genes,
            _concat(pop, elites, evaluation),
            np.concatenate([pop.agent_id[elites], child_ids]),
            np.concatenate([pop.parent_a[elites], child_a]),
            np.concatenate([pop.parent_b[elites], child_b]),
            np.concatenate([pop.birth_generation[elites], np.full(n_children, generation)]),
        )
        # Mutation cells index the children; shift rows past the elites.
        mutation = mutation._replace(rows=mutation.rows + elites.size)
        return self._finish(
            generation,
            population,
            order,
            pop,
            n_children,
            int(mutation.rows.size),
            int(crossed.sum()),
            ms,
            mutation,
            new_first,
        )

    def _inject(
        self,
        genes: FloatArray,
        evaluation: Any,
        ids: np.ndarray,
        parent_a: np.ndarray,
        parent_b: np.ndarray,
        first_id: int,
    ) -> tuple[Any, int]:
        """Put uploaded agents in place of the weakest new ones (arrays changed in place).

        Returns the evaluation (copied when changed) and the first id created for this
        generation (uploaded agents got their ids when they were accepted).
        """
        if not self._pending:
            return evaluation, first_id
        p = self.params
        fitness, memory_kb, speed_us = (np.array(a, dtype=np.float64) for a in evaluation)
        violation = ops.constraint_violation(
            memory_kb, speed_us, p.memory_limit_kb, p.speed_limit_us
        )
        count = min(len(self._pending), ids.size)
        weakest = ops.rank_order(ops.selection_score(fitness, violation))[::-1][:count]
        pending, self._pending = self._pending[:count], self._pending[count:]
        for row, agent in zip(weakest, pending, strict=True):
            genes[row] = agent.genes
            fitness[row], memory_kb[row], speed_us[row] = agent.metrics
            ids[row] = agent.agent_id
            parent_a[row] = parent_b[row] = -1
        return (fitness, memory_kb, speed_us), min(first_id, *(a.agent_id for a in pending))

    def _build(
        self,
        genes: FloatArray,
        evaluation: Any,
        ids: np.ndarray,
        parent_a: np.ndarray,
        parent_b: np.ndarray,
        birth: np.ndarray,
    ) -> tuple[Population, np.ndarray]:
        """Assemble a population; return it with its best rows (max(elite_count, 1)), best first."""
        p = self.params
        fitness, memory_kb, speed_us = evaluation
        violation = ops.constraint_violation(
            memory_kb, speed_us, p.memory_limit_kb, p.speed_limit_us
        )
        score = ops.selection_score(fitness, violation)
        status = np.where(violation > 0, VIOLATING, EVOLVING).astype(np.int8)
        top = ops.elite_indices(score, max(p.elite_count, 1))
        if p.elite_count:
            elite = top[: p.elite_count]
            status[elite] = np.where(violation[elite] > 0, VIOLATING, ELITE)
        population = Population(
            genes, fitness, memory_kb, speed_us, violation, ids, parent_a, parent_b, birth, status
        )
        self._score_cache = (population, p.memory_limit_kb, p.speed_limit_us, score)
        return population, top

    def _score_of(self, population: Population) -> FloatArray:
        """Feasibility-first scores under the limits in force (cached from _build)."""
        p = self.params
        cached = self._score_cache
        if (
            cached is not None
            and cached[0] is population
            and cached[1:3] == (p.memory_limit_kb, p.speed_limit_us)
        ):
            return cached[3]
        violation = ops.constraint_violation(
            population.memory_kb, population.speed_us, p.memory_limit_kb, p.speed_limit_us
        )
        return ops.selection_score(population.fitness, violation)

    def _finish(
        self,
        generation: int,
        population: Population,
        order: np.ndarray,
        previous: Population | None,
        evolved: int,
        mutations: int,
        crossovers: int,
        evaluation_ms: float,
        mutation: ops.Mutation,
        new_first: int,
    ) -> tuple[GenerationResult, Snapshot, tuple[int, int]]:
        p = self.params
        best = int(order[0])
        elite_rows = order[: p.elite_count]
        now = self._clock()
        best_fitness = float(population.fitness[best])
        average = float(population.fitness.mean())
        new_last = self._next_agent_id + evolved - 1

        evolution = EvolutionUpdate(
            generation=generation,
            average_fitness=average,
            best_fitness=best_fitness,
            improvement=0.0 if math.isnan(self._last_best) else best_fitness - self._last_best,
            agents_evolved=evolved,
            mutations_applied=mutations,
            crossovers=crossovers,
            run_id=self.run_id,
            branch=self.branch,
            population_size=len(population),
            feasible_fraction=float(np.count_nonzero(population.violation == 0) / len(population)),
            diversity=self.space.diversity(population.genes),
            worst_fitness=float(population.fitness.min()),
            best_agent_id=f"agent-{int(population.agent_id[best])}",
            best_agent_name=self._name(population, best),
            best_memory_kb=float(population.memory_kb[best]),
            best_speed_us=float(population.speed_us[best]),
            mutation_rate=p.mutation_rate,
            crossover_rate=p.crossover_rate,
            evaluation_ms=evaluation_ms,
            timestamp=now,
        )

        # Agent updates: who entered or left the elite, and a new best.
        elite_ids = [int(i) for i in population.agent_id[elite_rows]]
        previous_elite = set(self._elite_ids)
        agents: list[AgentUpdate] = []
        best_id = int(population.agent_id[best])
        previous_best = self._best_id
        for row in order if p.elite_count == 0 else elite_rows:
            aid = int(population.agent_id[row])
            if aid == best_id and aid != previous_best:
                agents.append(self._agent_update(population, int(row), generation, "new_best"))
            elif aid not in previous_elite and p.elite_count:
                agents.append(self._agent_update(population, int(row), generation, "elite"))
        if previous is not None and self._elite_ids:
            current_ids = population.agent_id
            for aid in self._elite_ids:
                if aid in elite_ids:
                    continue
                row = np.flatnonzero(current_ids == aid)
                if row.size:
                    agents.append(
                        self._agent_update(population, int(row[0]), generation, "left_elite")
                    )
                else:
                    old = previous.row_of(aid)
                    if old is not None:
                        agents.append(
                            self._agent_update(
                                previous, old, generation, "left_elite", retired=True
                            )
                        )

        logs = self._mutation_logs(population, mutation, generation)

        def worst_new() -> list[str]:
            newborn = slice(len(population) - evolved, len(population))
            weakest = _smallest(population.fitness[newborn], 5)
            return [f"agent-{int(i)}" for i in population.agent_id[newborn][weakest]]

        best_violation: dict[str, tuple[float, float]] = {}
        if population.violation[best] > 0:
            if population.memory_kb[best] > p.memory_limit_kb:
                best_violation["memory_kb"] = (float(population.memory_kb[best]), p.memory_limit_kb)
            if population.speed_us[best] > p.speed_limit_us:
                best_violation["speed_us"] = (float(population.speed_us[best]), p.speed_limit_us)
        detector = AlertDetector(self.thresholds, self._detector.state())
        findings = detector.observe(
            generation=generation,
            average_fitness=average,
            best_fitness=best_fitness,
            best_agent=f"agent-{best_id}",
            best_violation=best_violation,
            worst_new_agents=worst_new,
        )
        alerts = [
            Alert(
                alert_id=f"alert-{self._next_alert_id + i}",
                severity=f.severity,
                kind=f.kind,
                title=f.title,
                message=f.message,
                details=f.details,
                recommended_action=f.recommended_action,
                generation=generation,
            )
            for i, f in enumerate(findings)
        ]

        state = {
            "parameters": p.to_dict(),
            "rng": self.rng.bit_generator.state,
            "detector": detector.state(),
            "elite_ids": elite_ids,
            "best_id": best_id,
            "last_best": best_fitness,
            "next_agent_id": new_last + 1,
            "next_alert_id": self._next_alert_id + len(alerts),
        }
        snapshot = Snapshot(generation, self.branch, population, state)
        result = GenerationResult(evolution=evolution, agents=agents, logs=logs, alerts=alerts)
        return result, snapshot, (new_first, new_last)

    def _commit(self, snapshot: Snapshot) -> None:
        """Make a recorded generation the engine's current state."""
        state = snapshot.state
        self.population = snapshot.population
        self.generation = snapshot.generation
        self._detector = AlertDetector(self.thresholds, state["detector"])
        self._elite_ids = list(state["elite_ids"])
        self._best_id = int(state["best_id"])
        self._last_best = float(state["last_best"])
        self._next_agent_id = max(self._next_agent_id, int(state["next_agent_id"]))
        self._next_alert_id = max(self._next_alert_id, int(state["next_alert_id"]))

    def _restore(self, snapshot: Snapshot) -> None:
        """Restore a stored generation: population, parameters, RNG and detector state."""
        self._commit(snapshot)
        self.params = Parameters.validated(snapshot.state["parameters"])
        self.rng.bit_generator.state = snapshot.state["rng"]

    def _announce(self, result: GenerationResult) -> None:
        self._publish(result.evolution)
        for agent in result.agents:
            self._publish(agent)
        for entry in result.logs:
            self._publish(entry)
        for alert in result.alerts:
            self._publish(alert)

    def _record_side_events(self, logs: list[LogEntry], alerts: list[Alert]) -> None:
        if self.run_id is not None:
            self.store.record_events(self.run_id, self.branch, self.generation, logs, alerts)
        for entry in logs:
            self._publish(entry)
        for alert in alerts:
            self._publish(alert)

    # -- names, agents, logs ---------------------------------------------------------------

    def _name(self, population: Population, row: int) -> str:
        roles = getattr(self.problem, "role_names", ("Agent",))
        role_of = getattr(self.problem, "roles", None)
        role = 0 if role_of is None else int(role_of(population.genes[row : row + 1])[0])
        return f"{roles[role % len(roles)]}_Agent_v{int(population.agent_id[row])}"

    def _agent_update(
        self, population: Population, row: int, generation: int, reason: str, retired: bool = False
    ) -> AgentUpdate:
        parents = [
            f"agent-{int(x)}"
            for x in (population.parent_a[row], population.parent_b[row])
            if x >= 0
        ]
        status = RETIRED if retired else int(population.status[row])
        return AgentUpdate(
            agent_id=f"agent-{int(population.agent_id[row])}",
            name=self._name(population, row),
            status=STATUS_NAMES[status],
            fitness=float(population.fitness[row]),
            memory_kb=float(population.memory_kb[row]),
            speed_us=float(population.speed_us[row]),
            generation=generation,
            birth_generation=int(population.birth_generation[row]),
            parents=parents,
            genes=self.space.decode(population.genes[row]),
            reason=reason,
        )

    def _mutation_logs(
        self, population: Population, mutation: ops.Mutation, generation: int
    ) -> list[LogEntry]:
        count = mutation.rows.size
        if not count or not self.log_sample:
            return []
        # An evenly spread sample: deterministic, and no draw from the run's generator.
        m = min(self.log_sample, count)
        picks = np.arange(m) * (count - 1) // max(m - 1, 1)
        entries = []
        for k in picks:
            row, col = int(mutation.rows[k]), int(mutation.columns[k])
            gene = self.space.genes[col]
            old = self.space.value(col, mutation.old[k])
            new = self.space.value(col, mutation.new[k])
            agent = f"agent-{int(population.agent_id[row])}"
            entries.append(
                LogEntry(
                    level="info",
                    message=f"Mutation applied to {agent}",
                    details={
                        "mutation_type": "categorical_switch"
                        if gene.kind == "categorical"
                        else "parameter_adjustment",
                        "gene_modified": gene.name,
                        "old_value": old,
                        "new_value": new,
                        "agent_id": agent,
                    },
                    generation=generation,
                )
            )
        return entries

    def agent(self, agent_id: str | int) -> AgentUpdate:
        """Return an agent's status, current or retired (retired ones from the store).

        Raises:
            AgentNotFound: if the run never had that agent (or its generation is not kept).
        """
        number = _agent_number(agent_id)
        with self._lock:
            pop = self.population
            if pop is not None:
                row = pop.row_of(number)
                if row is not None:
                    return self._agent_update(pop, row, self.generation, "requested")
            if self.run_id is not None:
                where = self.store.find_agent_generation(self.run_id, number)
                if where is not None:
                    try:
                        snap = self.store.load_snapshot(self.run_id, where[0], where[1])
                    except GenerationNotFound:
                        snap = None
                    row = None if snap is None else snap.population.row_of(number)
                    if snap is not None and row is not None:
                        return self._agent_update(
                            snap.population, row, snap.generation, "requested", retired=True
                        )
        raise AgentNotFound(
            f"no agent {agent_id!r} in this run", details={"agent_id": str(agent_id)}
        )

    def agent_code(self, agent_id: str | int) -> str:
        """Return an agent's genome as readable Python source (see :mod:`tdevlab.engine.code`).

        Raises:
            AgentNotFound: as :meth:`agent`.
        """
        update = self.agent(agent_id)
        return render_agent_code(
            self.space,
            self.space.encode(update.genes),
            agent_id=update.agent_id,
            name=update.name,
            generation=update.birth_generation,
        )

    def add_agent_code(self, source: str | bytes) -> AgentUpdate:
        """Parse uploaded agent code (never executed) and add the agent (see :meth:`add_agent`).

        Raises:
            ConstraintViolation: if the code is over the memory limit in size, or the agent
                breaks a constraint.
            InvalidAgentCode: if the code is not a valid genome of this problem.
        """
        return self.add_agent(self.parse_code(source))

    def add_agent(self, genome: Mapping[str, Any]) -> AgentUpdate:
        """Evaluate a genome now and queue it to join the next generation.

        The agent gets its id at once; in the next generation it takes the place of the
        weakest new agent. It draws nothing from the run's random generator.

        Returns:
            The agent's status (``reason="uploaded"``).

        Raises:
            InvalidParameters: if the genome does not fit the gene space.
            ConstraintViolation: if the agent breaks the memory or speed limit.
            EvaluationError: if the problem cannot evaluate it.
        """
        row = self.space.encode(genome)
        with self._lock:
            p = self.params
            evaluation, _ = self._evaluate(row[None, :], self._next_agent_id)
            fitness, memory_kb, speed_us = (float(a[0]) for a in evaluation)
            broken = {
                name: {"value": value, "limit": limit}
                for name, value, limit in (
                    ("memory_kb", memory_kb, p.memory_limit_kb),
                    ("speed_us", speed_us, p.speed_limit_us),
                )
                if value > limit
            }
            if broken:
                text = ", ".join(f"{k} {v['value']:.3f} > {v['limit']}" for k, v in broken.items())
                raise ConstraintViolation(
                    f"agent refused: {text}", details={"constraints": broken, "reason": text}
                )
            agent_id = self._next_agent_id
            self._next_agent_id += 1
            self._pending.append(_Pending(agent_id, row, (fitness, memory_kb, speed_us)))
            generation = self.generation + 1
            names = getattr(self.problem, "role_names", ("Agent",))
            role_of = getattr(self.problem, "roles", None)
            role = 0 if role_of is None else int(role_of(row[None, :])[0])
            update = AgentUpdate(
                agent_id=f"agent-{agent_id}",
                name=f"{names[role % len(names)]}_Agent_v{agent_id}",
                status="evolving",
                fitness=fitness,
                memory_kb=memory_kb,
                speed_us=speed_us,
                generation=generation,
                birth_generation=generation,
                parents=[],
                genes=self.space.decode(row),
                reason="uploaded",
            )
        self._publish(update)
        return update

    def parse_code(self, source: str | bytes) -> dict[str, Any]:
        """Parse agent source into a genome dict, without executing it.

        Raises:
            ConstraintViolation: if the source is larger than the memory limit.
            InvalidAgentCode: if it is not a valid genome of this problem.
        """
        row = parse_agent_code(
            source, self.space, max_bytes=int(self.params.memory_limit_kb * 1024)
        )
        return self.space.decode(row)

    # -- rollback --------------------------------------------------------------------------

    def rollback(self, generation: int) -> Snapshot:
        """Return to a past generation of the current lineage, exactly.

        The population, parameters, counters, alert state and random generator state of
        that generation are restored, so continuing reproduces the original generations
        bit for bit (new agents get new ids: ids are never reused in a run). The abandoned
        generations stay in the store under their branch; a new branch continues.

        Raises:
            GenerationNotFound: if the generation is not in the current lineage or no longer
                kept; the engine is unchanged.
        """
        if isinstance(generation, bool) or not isinstance(generation, int | np.integer):
            raise InvalidParameters(f"generation must be an integer, got {generation!r}")
        generation = int(generation)
        with self._lock:
            if not 0 <= generation <= self.generation or self.run_id is None:
                raise GenerationNotFound(
                    f"cannot roll back to generation {generation}: the run is at generation "
                    f"{self.generation}",
                    details={"generation": generation, "current_generation": self.generation},
                )
            snapshot = self.store.load_snapshot(self.run_id, self.branch, generation)
            if generation == self.generation:
                return snapshot
            abandoned = (self.branch, generation + 1, self.generation)
            self.branch = self.store.create_branch(self.run_id, self.branch, generation)
            self._restore(snapshot)
            entry = LogEntry(
                level="warning",
                message=f"Rolled back to generation {generation}",
                details={
                    "generation": generation,
                    "branch": self.branch,
                    "abandoned_branch": abandoned[0],
                    "abandoned_generations": [abandoned[1], abandoned[2]],
                },
                generation=generation,
            )
            alert = Alert(
                alert_id=f"alert-{self._next_alert_id}",
                severity="warning",
                kind="rollback",
                title="Rollback Performed",
                message=(
                    f"Rolled back from generation {abandoned[2]} to generation {generation}; "
                    f"generations {abandoned[1]}..{abandoned[2]} kept as branch {abandoned[0]}"
                ),
                details={
                    "generation": generation,
                    "branch": self.branch,
                    "abandoned_branch": abandoned[0],
                },
                recommended_action=None,
                generation=generation,
            )
            self._next_alert_id += 1
            self._record_side_events([entry], [alert])
            return snapshot

    # -- loops -----------------------------------------------------------------------------

    def run(self, generations: int | None = None) -> Iterator[GenerationResult]:
        """Run generations, yielding each one's result after it is stored.

        Args:
            generations: How many generations to produce (a fresh engine first yields its
                initial population as generation 0, which counts); ``None`` runs until
                :meth:`stop`.

        Raises:
            InvalidState: if a loop is already running.
            InvalidParameters: if ``generations`` is negative.
        """
        remaining = _check_generations(generations)
        self._transition("start")
        self._sync_thread = threading.get_ident()
        try:
            while remaining is None or remaining > 0:
                with self._cond:
                    while self._state is EngineState.PAUSED:
                        self._cond.wait()
                    if self._state is not EngineState.RUNNING:
                        return
                result = self._step()
                if remaining is not None:
                    remaining -= 1
                yield result
        except BaseException as exc:
            self._end(exc)
            raise
        else:
            self._end(None)

    async def run_async(
        self,
        generations: int | None = None,
        *,
        offload: bool = True,
        on_result: Callable[[GenerationResult], Any] | None = None,
        interval: float = 0.0,
    ) -> GenerationResult | None:
        """Run generations inside an event loop (a Jupyter kernel, a server).

        Between generations the loop gets control back, and :meth:`pause`,
        :meth:`resume`, :meth:`stop` and parameter changes take effect.

        Args:
            generations: As for :meth:`run`.
            offload: Evaluate each generation in a worker thread so the loop stays responsive.
            on_result: Called with each generation's result (on the loop's thread).
            interval: The least seconds from one generation's start to the next's (0: as
                fast as possible). A fast problem watched live stays readable; pause and
                stop still act at once.

        Raises:
            InvalidParameters: for a negative or non-finite ``interval``.

        Returns:
            The last generation's result (``None`` if none was produced).
        """
        remaining = _check_generations(generations)
        if not (isinstance(interval, int | float) and 0 <= interval < math.inf):
            raise InvalidParameters(f"interval={interval!r} must be a number of seconds >= 0")
        self._transition("start")
        self._async_loop = asyncio.get_running_loop()
        wake = self._async_wake = asyncio.Event()
        last = None
        try:
            while remaining is None or remaining > 0:
                while self._state is EngineState.PAUSED:
                    await self._async_wake.wait()
                    self._async_wake.clear()
                if self._state is not EngineState.RUNNING:
                    break
                started = time.monotonic()
                last = await asyncio.to_thread(self._step) if offload else self._step()
                if remaining is not None:
                    remaining -= 1
                if on_result is not None:
                    on_result(last)
                await asyncio.sleep(0)
                wait = interval - (time.monotonic() - started)
                if wait > 0:
                    # Woken early by pause/resume/stop, which the loop above then handles.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), wait)
        except BaseException as exc:
            self._end(exc)
            raise
        finally:
            self._async_loop = None
            self._async_wake = None
        self._end(None)
        return last

    def _end(self, exc: BaseException | None) -> None:
        self._sync_thread = None
        with self._cond:
            previous = self._state
            if isinstance(exc, Exception):
                self._state = EngineState.FAILED
            elif previous in (EngineState.RUNNING, EngineState.PAUSED):
                # Finished, or left early (a `break`, a cancelled task, Ctrl-C).
                self._state = EngineState.IDLE
            self._cond.notify_all()
            current = self._state
        if current is not previous:
            action = "fail" if current is EngineState.FAILED else "finish"
            self._publish(
                ControlEvent(action, current, previous, self.generation, self.params.to_dict())
            )
            if self.run_id is not None:
                self.store.set_status(self.run_id, current.value)
        if isinstance(exc, EvolutionFailed):
            self._publish(
                LogEntry(
                    level="error", message=str(exc), details=exc.details, generation=self.generation
                )
            )

    # -- export, close ---------------------------------------------------------------------

    def export(self, path: str | Path, *, format: str = "parquet") -> Path:
        """Write this run as a dataset directory (see :func:`tdevlab.store.export.export_run`).

        Returns:
            The dataset directory.
        """
        from tdevlab.store.export import export_run

        if self.run_id is None:
            raise InvalidState("nothing to export: the engine has not produced a generation yet")
        return export_run(self.store, self.run_id, path, format=format, problem=self.problem)

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
            f"<Engine {self.problem.name} run={self.run_id} generation={self.generation} "
            f"branch={self.branch} state={self._state.value}>"
        )


class _Pending(NamedTuple):
    agent_id: int
    genes: FloatArray
    metrics: tuple[float, float, float]


def _concat(pop: Population, elites: np.ndarray, evaluation: Any) -> tuple[FloatArray, ...]:
    return tuple(
        np.concatenate([old[elites], new])
        for old, new in zip((pop.fitness, pop.memory_kb, pop.speed_us), evaluation, strict=True)
    )


def _smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` smallest values, smallest first (ties by index)."""
    if values.size > count:
        part = np.argpartition(values, count - 1)[:count]
    else:
        part = np.arange(values.size)
    return part[np.lexsort((part, values[part]))]


def _agent_number(agent_id: str | int) -> int:
    if isinstance(agent_id, int | np.integer) and not isinstance(agent_id, bool):
        return int(agent_id)
    if isinstance(agent_id, str) and agent_id.startswith("agent-") and agent_id[6:].isdigit():
        return int(agent_id[6:])
    raise AgentNotFound(
        f"agent id {agent_id!r} is not of the form 'agent-<number>'",
        details={"agent_id": str(agent_id)},
    )


def _check_generations(generations: int | None) -> int | None:
    if generations is None:
        return None
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 0:
        raise InvalidParameters(f"generations={generations!r} must be a non-negative integer")
    return generations


def _open_store(store: Any, keep_snapshots: int | None) -> RunStoreBase:
    if store is None:
        from tdevlab.store.memory import MemoryStore

        return MemoryStore(keep_snapshots=keep_snapshots)
    if isinstance(store, str | Path):
        from tdevlab.store.sqlite import SQLiteStore

        return SQLiteStore(store)
    if hasattr(store, "record_generation"):
        return store  # type: ignore[no-any-return]
    raise InvalidParameters(
        f"store must be None, a path or a run store, got {type(store).__name__}"
    )
