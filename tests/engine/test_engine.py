"""The Engine: generations, events, parameters, state machine, loops, rollback."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdevlab import (
    AgentDesign,
    AgentNotFound,
    Alert,
    AlertThresholds,
    ControlEvent,
    Engine,
    EngineState,
    EvaluationError,
    EvolutionUpdate,
    Float,
    FunctionProblem,
    GenerationNotFound,
    GenerationResult,
    InvalidParameters,
    InvalidState,
    LogEntry,
    Rastrigin,
    Sphere,
)
from tdevlab.engine import operators as ops
from tdevlab.engine.alerts import AlertDetector, AlertFinding
from tdevlab.engine.events import STATUS_NAMES
from tdevlab.engine.population import Population
from tests.conftest import run, timeout

SPEC_EVOLUTION_FIELDS = {
    "generation",
    "average_fitness",
    "best_fitness",
    "improvement",
    "agents_evolved",
    "mutations_applied",
    "crossovers",
}
SPEC_AGENT_FIELDS = {
    "agent_id",
    "name",
    "status",
    "fitness",
    "memory_kb",
    "speed_us",
    "generation",
}


def _rows(engine: Engine) -> list[dict[str, object]]:
    """Generation rows without the wall-clock fields."""
    out = []
    for row in engine.store.generation_rows(engine.run_id or 0):
        row = dict(row)
        for volatile in ("timestamp", "evaluation_ms", "best_agent_id", "best_agent_name"):
            row.pop(volatile)
        out.append(row)
    return out


def test_first_step_is_generation_zero_then_counts_up() -> None:
    """A fresh engine's first step evaluates the initial population as generation 0."""
    engine = Engine(seed=1, population_size=20)
    assert [engine.step().generation for _ in range(3)] == [0, 1, 2]
    assert engine.generation == 2


def test_run_yields_requested_number_of_generations() -> None:
    """run(generations=N) produces N generations, and a later run continues the numbering."""
    engine = Engine(seed=1, population_size=20)
    assert [r.generation for r in engine.run(generations=4)] == [0, 1, 2, 3]
    assert [r.generation for r in engine.run(generations=2)] == [4, 5]
    assert engine.state is EngineState.IDLE


def test_evolution_update_has_spec_fields_and_real_counts() -> None:
    """Each update carries the spec's fields; counts agree with the operators' work."""
    engine = Engine(Sphere(dims=8), seed=3, population_size=50, elite_count=2)
    results = list(engine.run(generations=30))
    for r in results[1:]:
        e = r.evolution
        assert set(e.to_dict()) >= SPEC_EVOLUTION_FIELDS
        assert e.agents_evolved == 48
        # per-gene mutation at 0.15 over 48 x 8 genes: about 58 expected
        assert 20 < e.mutations_applied < 110
        assert 15 < e.crossovers < 50
        assert e.best_fitness >= e.average_fitness >= e.worst_fitness
        assert 0.0 <= e.feasible_fraction <= 1.0
        assert e.population_size == 50
    bests = [r.best_fitness for r in results]
    assert bests[-1] > bests[0]
    improvements = [r.evolution.improvement for r in results[1:]]
    assert np.allclose(improvements, np.diff(bests))


def test_same_seed_same_run_and_different_seed_differs() -> None:
    """Two engines with the same seed produce identical runs; another seed does not."""
    a = Engine(seed=11, population_size=30)
    b = Engine(seed=11, population_size=30)
    c = Engine(seed=12, population_size=30)
    for engine in (a, b, c):
        list(engine.run(generations=15))
    assert _rows(a) == _rows(b)
    assert _rows(a) != _rows(c)
    assert a.population is not None
    assert b.population is not None
    assert np.array_equal(a.population.genes, b.population.genes)


def test_elitism_never_loses_the_best() -> None:
    """With an elite and a feasible agent in every generation, best fitness never drops."""
    engine = Engine(AgentDesign(), seed=5, population_size=40, elite_count=1, mutation_rate=0.5)
    results = list(engine.run(generations=60))
    # Once feasible agents exist, the feasibility-first best is the fittest feasible agent,
    # so best_fitness itself must be monotonic (this seed has feasible agents from the start).
    assert all(r.evolution.feasible_fraction > 0 for r in results)
    best = [r.best_fitness for r in results]
    assert all(b2 >= b1 for b1, b2 in zip(best, best[1:], strict=False))
    assert best[-1] > best[0]


def _best_key(population: Population) -> tuple[bool, float, float]:
    """The feasibility-first rank of a population's best agent, comparable across generations.

    selection_score ranks within one population only; this tuple (feasible, -violation,
    fitness) orders agents the same way and compares between populations too.
    """
    best = int(np.argmax(ops.selection_score(population.fitness, population.violation)))
    violation = float(population.violation[best])
    return violation == 0.0, -violation, float(population.fitness[best])


@settings(max_examples=25, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    elite_count=st.integers(1, 3),
    mutation_rate=st.floats(0.0, 1.0),
)
def test_elitism_property_best_survives_and_never_worsens(
    seed: int, elite_count: int, mutation_rate: float
) -> None:
    """With elite_count >= 1 the best agent (genome and id) survives; its rank never drops."""
    engine = Engine(
        AgentDesign(),
        seed=seed,
        population_size=12,
        elite_count=elite_count,
        mutation_rate=mutation_rate,
        log_sample=0,
    )
    previous: tuple[tuple[bool, float, float], int, np.ndarray] | None = None
    for result in engine.run(generations=6):
        pop = engine.population
        assert pop is not None
        key = _best_key(pop)
        assert result.best_fitness == key[2]
        if previous is not None:
            previous_key, previous_id, previous_genes = previous
            assert key >= previous_key
            rows = np.flatnonzero(pop.agent_id == previous_id)
            assert rows.size == 1, f"agent-{previous_id} was lost"
            assert np.array_equal(pop.genes[rows[0]], previous_genes)
        best = int(np.argmax(ops.selection_score(pop.fitness, pop.violation)))
        previous = (key, int(pop.agent_id[best]), pop.genes[best].copy())


def test_counts_are_zero_without_mutation_or_crossover() -> None:
    """mutation_rate=0 applies no mutation and crossover_rate=0 no crossover, every generation."""
    engine = Engine(
        AgentDesign(), seed=4, population_size=30, mutation_rate=0.0, crossover_rate=0.0
    )
    results = list(engine.run(generations=8))
    for r in results[1:]:
        assert r.evolution.agents_evolved == 28
        assert r.evolution.mutations_applied == 0
        assert r.evolution.crossovers == 0
        assert r.logs == []  # no mutation, nothing to log
    assert engine.population is not None
    # Without variation every gene row is a copy of a generation-0 row.
    initial = engine.store.load_snapshot(engine.run_id or 0, 0, 0).population.genes
    assert all((initial == row).all(axis=1).any() for row in engine.population.genes)


@pytest.mark.parametrize("crossover", ["uniform", "blend"])
def test_rate_one_counts_every_gene_and_every_child(crossover: str) -> None:
    """mutation_rate=1 mutates every gene of every new agent; crossover_rate=1 crosses all."""
    problem = AgentDesign()
    n_genes = len(problem.gene_space)
    engine = Engine(
        problem,
        seed=4,
        population_size=30,
        elite_count=3,
        mutation_rate=1.0,
        crossover_rate=1.0,
        crossover=crossover,
    )
    results = list(engine.run(generations=5))
    assert results[0].evolution.mutations_applied == 0  # generation 0 is the initial draw
    for r in results[1:]:
        e = r.evolution
        assert e.agents_evolved == 30 - 3
        assert e.mutations_applied == e.agents_evolved * n_genes
        assert e.crossovers == e.agents_evolved


def test_agent_updates_announce_elites_and_new_best_only() -> None:
    """Agent updates name elite entries, departures and new bests, not the whole population."""
    engine = Engine(seed=2, population_size=100, elite_count=3)
    for result in engine.run(generations=25):
        assert len(result.agents) <= 2 * 3 + 1
        for update in result.agents:
            assert set(update.to_dict()) >= SPEC_AGENT_FIELDS
            assert update.status in STATUS_NAMES
            assert update.agent_id.startswith("agent-")
            assert update.reason in {"new_best", "elite", "left_elite"}
            assert "_Agent_v" in update.name
        if result.generation > 0:
            assert (
                result.evolution.best_agent_id in {a.agent_id for a in result.agents}
                or result.evolution.improvement == 0.0
            )


def test_agent_ids_are_never_reused() -> None:
    """Every agent ever created has a distinct id, across a rollback too."""
    engine = Engine(seed=4, population_size=30)
    seen: dict[int, bytes] = {}
    for _ in engine.run(generations=10):
        assert engine.population is not None
        for aid, genes in zip(engine.population.agent_id, engine.population.genes, strict=True):
            assert seen.setdefault(int(aid), genes.tobytes()) == genes.tobytes()
    engine.rollback(5)
    before = max(seen)
    engine.step()
    assert engine.population is not None
    births = engine.population.agent_id[engine.population.birth_generation == 6]
    assert births.min() > before


def test_mutation_logs_have_spec_shape_and_are_bounded() -> None:
    """Mutation logs follow the spec's details shape, at most log_sample per generation."""
    engine = Engine(AgentDesign(), seed=6, population_size=60, log_sample=4)
    results = list(engine.run(generations=5))
    for r in results[1:]:
        assert 0 < len(r.logs) <= 4
        for entry in r.logs:
            assert entry.level == "info"
            assert entry.message.startswith("Mutation applied to agent-")
            d = entry.details
            assert d["mutation_type"] in {"parameter_adjustment", "categorical_switch"}
            assert d["gene_modified"] in AgentDesign().gene_space.names
            assert {"old_value", "new_value"} <= set(d)
            if d["mutation_type"] == "categorical_switch":
                assert d["old_value"] != d["new_value"]
    quiet = Engine(seed=6, population_size=20, log_sample=0)
    assert all(not r.logs for r in quiet.run(generations=3))


def test_invalid_parameters_are_refused_and_nothing_changes() -> None:
    """Bad parameters raise InvalidParameters naming them, and leave the engine as it was."""
    with pytest.raises(InvalidParameters, match="population_size"):
        Engine(population_size=1)
    with pytest.raises(InvalidParameters, match="mutation_rate"):
        Engine(mutation_rate=1.5)
    with pytest.raises(InvalidParameters, match="colour"):
        Engine(colour="red")
    engine = Engine(seed=1, population_size=20)
    engine.step()
    before = engine.params
    with pytest.raises(InvalidParameters, match="crossover_rate"):
        engine.set_parameters(mutation_rate=0.3, crossover_rate=-0.1)
    with pytest.raises(InvalidParameters, match="unknown parameter"):
        engine.set_parameters(mutation_rate=0.3, learning_speed=2)
    with pytest.raises(InvalidParameters, match="elite_count"):
        engine.set_parameters(population_size=4, elite_count=4)
    with pytest.raises(InvalidParameters, match="must be an integer"):
        engine.set_parameters(population_size=10.5)
    with pytest.raises(InvalidParameters, match="finite"):
        engine.set_parameters(mutation_rate=float("nan"))
    assert engine.params == before
    assert engine.generation == 0


def test_population_resize_between_generations_keeps_the_best() -> None:
    """Resizing applies to the next generation and keeps the elites (so the best survives)."""
    engine = Engine(AgentDesign(), seed=8, population_size=80, elite_count=2)
    list(engine.run(generations=10))
    best = engine.step().best_fitness
    engine.set_parameters(population_size=20)
    small = engine.step()
    assert small.evolution.population_size == 20
    assert small.best_fitness >= best
    engine.set_parameters(population_size=150, mutation_rate=0.3)
    big = engine.step()
    assert big.evolution.population_size == 150
    assert big.evolution.mutation_rate == 0.3
    assert big.best_fitness >= best


def test_state_machine_refuses_invalid_transitions() -> None:
    """pause/resume/stop outside a run raise InvalidState naming the state; nothing changes."""
    engine = Engine(seed=1, population_size=10)
    with pytest.raises(InvalidState, match="idle"):
        engine.pause()
    with pytest.raises(InvalidState, match="cannot resume"):
        engine.resume()
    with pytest.raises(InvalidState, match="cannot stop"):
        engine.stop()
    assert engine.state is EngineState.IDLE


def test_sync_run_cannot_be_paused_from_its_own_thread() -> None:
    """Pausing a synchronous run from inside its loop is refused instead of hanging forever."""
    engine = Engine(seed=1, population_size=10)
    for result in engine.run(generations=5):
        if result.generation == 2:
            with pytest.raises(InvalidState, match="own thread"):
                engine.pause()
            engine.stop()
    assert engine.generation == 2
    assert engine.state is EngineState.STOPPED


def test_sync_run_pauses_and_resumes_from_another_thread() -> None:
    """A run in a worker thread holds while paused and continues after resume."""
    engine = Engine(seed=1, population_size=10)
    reached = threading.Event()
    release = threading.Event()

    def on_event(event: object) -> None:
        if isinstance(event, EvolutionUpdate) and event.generation == 3:
            reached.set()
            release.wait(timeout(5))

    engine.subscribe(on_event)
    worker = threading.Thread(target=lambda: list(engine.run(generations=10)))
    worker.start()
    assert reached.wait(timeout(5))
    engine.pause()
    release.set()
    engine.ensure_run()  # takes the engine's lock: generation 3's step has ended
    assert worker.is_alive()  # held: the pause came before the loop's next state check
    held = engine.generation
    assert held == 3
    engine.resume()
    worker.join(timeout(5))
    assert not worker.is_alive()
    assert engine.generation == 9


def test_run_async_interval_paces_generations_and_stop_cuts_the_wait() -> None:
    """With an interval, a stop during the wait ends the run at once, after one generation."""

    async def scenario() -> tuple[list[int], EngineState]:
        engine = Engine(seed=1, population_size=10)
        seen: list[int] = []
        first = asyncio.Event()

        def on_result(result: GenerationResult) -> None:
            seen.append(result.generation)
            first.set()

        task = asyncio.create_task(engine.run_async(on_result=on_result, interval=3600))
        await asyncio.wait_for(first.wait(), timeout(5))
        engine.stop()
        await asyncio.wait_for(task, timeout(5))  # an hour-long wait would time this out
        return seen, engine.state

    seen, state = run(scenario())
    assert seen == [0]
    assert state is EngineState.STOPPED


@pytest.mark.parametrize("interval", [-1, float("nan"), float("inf"), "1"])
def test_run_async_refuses_a_bad_interval(interval: object) -> None:
    """A negative, non-finite or non-numeric interval is refused before anything runs."""
    engine = Engine(seed=1, population_size=10)
    with pytest.raises(InvalidParameters, match="interval"):
        asyncio.run(engine.run_async(1, interval=interval))  # type: ignore[arg-type]
    assert engine.generation == -1


def test_run_async_honours_pause_resume_stop() -> None:
    """run_async yields to the loop; pause holds it, resume continues, stop ends it."""

    async def scenario() -> tuple[int, int, int, EngineState]:
        engine = Engine(seed=1, population_size=10)
        seen: list[int] = []
        wanted = {"count": 3}
        reached = asyncio.Event()

        def on_result(result: GenerationResult) -> None:
            seen.append(result.generation)
            if len(seen) >= wanted["count"]:
                reached.set()

        # Steps on this loop (no worker thread): between two turns of the run's task no
        # step is in flight, so the pause holds from the generation it finds.
        task = asyncio.create_task(engine.run_async(on_result=on_result, offload=False))
        await asyncio.wait_for(reached.wait(), timeout(5))
        engine.pause()
        held = engine.generation
        # The run's task gets turns of this event loop; paused, it makes no generation.
        for _ in range(20):
            await asyncio.sleep(0)  # one turn of the loop
        still = engine.generation
        reached.clear()
        wanted["count"] = held + 5
        engine.resume()
        await asyncio.wait_for(reached.wait(), timeout(5))
        engine.stop()
        last = await asyncio.wait_for(task, timeout(5))
        assert last is not None
        return held, still, last.generation, engine.state

    held, still, last, state = run(scenario())
    assert held == still
    assert last >= held + 4
    assert state is EngineState.STOPPED


def test_run_async_runs_inline_without_offload() -> None:
    """run_async(offload=False) produces the same generations as a synchronous run."""
    a = Engine(seed=9, population_size=15)
    b = Engine(seed=9, population_size=15)
    list(a.run(generations=6))
    asyncio.run(b.run_async(generations=6, offload=False))
    assert _rows(a) == _rows(b)


def test_listeners_get_every_event_in_order() -> None:
    """subscribe() delivers control events, then each generation's update, agents, logs, alerts."""
    engine = Engine(seed=3, population_size=20)
    events: list[object] = []
    unsubscribe = engine.subscribe(events.append)
    list(engine.run(generations=3))
    assert isinstance(events[0], ControlEvent)
    assert events[0].to_dict()["state"] == "running"
    assert isinstance(events[-1], ControlEvent)
    assert events[-1].to_dict()["state"] == "idle"
    updates = [e for e in events if isinstance(e, EvolutionUpdate)]
    assert [u.generation for u in updates] == [0, 1, 2]
    unsubscribe()
    engine.step()
    assert len([e for e in events if isinstance(e, EvolutionUpdate)]) == 3


def test_a_failing_listener_does_not_stop_the_run() -> None:
    """An exception in a listener is logged; the generation is still produced and stored."""
    engine = Engine(seed=3, population_size=20)

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    engine.subscribe(broken)
    assert [r.generation for r in engine.run(generations=2)] == [0, 1]


def test_evaluation_error_leaves_engine_unchanged_and_retry_is_exact() -> None:
    """A failing problem raises EvaluationError with the agent id; a retry reproduces the run."""
    calls = {"n": 0, "fail_at": 45}

    def fitness(genes: dict[str, float | int | str | bool]) -> float:
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise ValueError("simulator crashed")
        return -(float(genes["x"]) ** 2)

    problem = FunctionProblem(fitness, [Float("x", -1, 1)])
    engine = Engine(problem, seed=5, population_size=20, elite_count=1)
    engine.step()  # generation 0: 20 calls
    engine.step()  # generation 1: 19 calls
    with pytest.raises(EvaluationError, match="simulator crashed") as info:
        engine.step()
    assert info.value.details["agent_id"].startswith("agent-")
    assert info.value.details["generation"] == 2
    assert engine.generation == 1
    assert engine.state is EngineState.IDLE
    retried = engine.step()

    calls.update(n=0, fail_at=-1)
    reference = Engine(FunctionProblem(fitness, [Float("x", -1, 1)]), seed=5, population_size=20)
    reference.set_parameters(elite_count=1)
    expected = [r.best_fitness for r in reference.run(generations=3)]
    assert retried.best_fitness == expected[2]


def test_problem_returning_nan_is_an_evaluation_error() -> None:
    """NaN fitness from a batch problem is refused with the agent named."""

    class Broken(Sphere):
        def evaluate(self, genes):  # type: ignore[no-untyped-def]
            result = super().evaluate(genes)
            result.fitness[3] = np.nan
            return result

    engine = Engine(Broken(dims=2), seed=1, population_size=10)
    with pytest.raises(EvaluationError, match="agent-4"):
        engine.step()
    assert engine.generation == -1


def test_run_loop_failure_marks_engine_failed_and_can_start_again() -> None:
    """An evaluation failure inside run() leaves the engine FAILED; a new run may start."""
    state = {"fail": True}

    class Flaky(Sphere):
        def evaluate(self, genes):  # type: ignore[no-untyped-def]
            if state["fail"] and genes.shape[0] < 10:
                raise RuntimeError("node lost")
            return super().evaluate(genes)

    engine = Engine(Flaky(dims=2), seed=1, population_size=10, elite_count=2)
    events: list[object] = []
    engine.subscribe(events.append)
    with pytest.raises(EvaluationError, match="node lost"):
        list(engine.run(generations=5))
    assert engine.state is EngineState.FAILED
    assert engine.generation == 0
    assert any(isinstance(e, LogEntry) and e.level == "error" for e in events)
    state["fail"] = False
    assert [r.generation for r in engine.run(generations=2)] == [1, 2]


def test_agent_lookup_current_and_retired() -> None:
    """engine.agent() finds current agents, retired ones from the store, and refuses others."""
    engine = Engine(seed=2, population_size=20)
    list(engine.run(generations=6))
    assert engine.population is not None
    current = f"agent-{int(engine.population.agent_id[-1])}"
    assert engine.agent(current).status in {"evolving", "violating", "elite"}
    retired = engine.agent("agent-1")
    assert retired.status == "retired"
    assert retired.generation == 0
    with pytest.raises(AgentNotFound, match="agent-999999"):
        engine.agent("agent-999999")
    with pytest.raises(AgentNotFound, match="form"):
        engine.agent("bob")


def test_agent_code_of_an_agent_parses_back_to_its_genes() -> None:
    """engine.agent_code renders an agent; engine.parse_code reads the same genome back."""
    engine = Engine(seed=2, population_size=20)
    list(engine.run(generations=3))
    best = engine.step().evolution.best_agent_id
    source = engine.agent_code(best)
    assert best in source
    assert engine.parse_code(source) == engine.agent(best).genes


def test_constraints_rank_feasible_agents_first() -> None:
    """With tight limits the best agent is feasible whenever any agent is feasible."""
    engine = Engine(AgentDesign(), seed=3, population_size=60, memory_limit_kb=4.0)
    for result in engine.run(generations=15):
        pop = engine.population
        assert pop is not None
        if (pop.violation == 0).any():
            assert result.evolution.best_memory_kb <= 4.0
            assert result.evolution.best_speed_us <= 3.0


def test_constraint_alert_when_no_agent_is_feasible() -> None:
    """An impossible limit raises one "Best Agent Violates Constraints" alert, not one each time."""
    engine = Engine(AgentDesign(), seed=3, population_size=30, memory_limit_kb=0.5)
    alerts = [a for r in engine.run(generations=8) for a in r.alerts]
    violations = [a for a in alerts if a.kind == "constraint_violation"]
    assert len(violations) == 1
    assert violations[0].severity == "error"
    assert "memory_kb" in violations[0].details["constraints"]


def test_forced_regression_raises_rollback_alert_with_target() -> None:
    """Raising the mutation rate far up drops fitness and raises a rollback recommendation."""
    engine = Engine(AgentDesign(), seed=1, population_size=100)
    list(engine.run(generations=40))
    engine.set_parameters(mutation_rate=0.9, elite_count=0)
    alerts: list[Alert] = [a for r in engine.run(generations=3) for a in r.alerts]
    regression = [a for a in alerts if a.kind == "fitness_regression"]
    assert regression, alerts
    first = regression[0]
    assert first.title == "Fitness Regression Detected"
    assert first.recommended_action == "rollback"
    assert first.severity in {"error", "critical"}
    assert 30 <= first.details["rollback_generation"] <= 39
    assert first.details["previous_fitness"] > first.details["current_fitness"]
    assert first.details["affected_agents"]
    assert "fitness dropped by" in first.message
    # one alert per episode: escalations only
    severities = [a.severity for a in regression]
    assert len(set(severities)) == len(severities)


def test_stagnation_alert() -> None:
    """A run that cannot improve raises one stagnation warning."""
    problem = FunctionProblem(lambda g: 0.5, [Float("x", 0, 1)])
    engine = Engine(
        problem,
        seed=1,
        population_size=10,
        alert_thresholds=AlertThresholds(stagnation_generations=5),
    )
    alerts = [a for r in engine.run(generations=15) for a in r.alerts]
    assert [a.kind for a in alerts] == ["stagnation"]
    assert alerts[0].recommended_action == "increase_mutation_rate"


def _steady_detector(
    thresholds: AlertThresholds | None = None, average: float = 1.0
) -> AlertDetector:
    """A detector fed a full regression window of generations 0..4 at ``average``."""
    detector = AlertDetector(thresholds or AlertThresholds())
    for generation in range(detector.thresholds.regression_window):
        assert _observe(detector, generation, average) == []
    return detector


def _observe(detector: AlertDetector, generation: int, average: float) -> list[AlertFinding]:
    """Feed one generation with a steady, feasible best; return the regression findings."""
    findings = detector.observe(
        generation=generation,
        average_fitness=average,
        best_fitness=1.0,
        best_agent="agent-1",
        best_violation={},
        worst_new_agents=lambda: ["agent-7", "agent-9"],
    )
    return [f for f in findings if f.kind == "fitness_regression"]


@pytest.mark.parametrize(
    ("average", "severity"),
    [
        (0.93, None),  # a 7% drop: below the 8% warning threshold
        (0.92, "warning"),  # exactly 8%: the spec's example severity
        (0.88, "warning"),
        (0.85, "error"),  # exactly 15%
        (0.75, "error"),
        (0.70, "critical"),  # exactly 30%
        (0.20, "critical"),
    ],
)
def test_regression_severity_grows_with_the_drop(average: float, severity: str | None) -> None:
    """Average-fitness drops of 8%, 15% and 30% give warning, error, critical: rollback."""
    detector = _steady_detector()
    findings = _observe(detector, 5, average)
    if severity is None:
        assert findings == []
        return
    [finding] = findings
    assert finding.severity == severity
    assert finding.title == "Fitness Regression Detected"
    assert finding.recommended_action == "rollback"
    assert finding.message == f"Generation 5 fitness dropped by {1.0 - average:.0%}"
    assert finding.details["previous_fitness"] == 1.0
    assert finding.details["current_fitness"] == average
    assert finding.details["affected_agents"] == ["agent-7", "agent-9"]
    assert 0 <= finding.details["rollback_generation"] <= 4


def test_regression_spec_example() -> None:
    """The spec's alert: 0.956 -> 0.879 is "fitness dropped by 8%", a warning."""
    detector = _steady_detector(average=0.956)
    [finding] = _observe(detector, 102, 0.879)
    assert finding.severity == "warning"
    assert finding.message == "Generation 102 fitness dropped by 8%"
    assert finding.details["previous_fitness"] == pytest.approx(0.956)


def test_regression_thresholds_are_configurable() -> None:
    """Raising the warning threshold above 8% silences an 8% drop; bigger drops still alert."""
    strict = AlertThresholds(
        regression_warning=0.10, regression_error=0.20, regression_critical=0.40
    )
    assert _observe(_steady_detector(strict), 5, 0.92) == []
    assert [f.severity for f in _observe(_steady_detector(strict), 5, 0.85)] == ["warning"]
    assert [f.severity for f in _observe(_steady_detector(strict), 5, 0.70)] == ["error"]
    assert [f.severity for f in _observe(_steady_detector(strict), 5, 0.60)] == ["critical"]
    with pytest.raises(InvalidParameters, match="regression_warning"):
        AlertThresholds(regression_warning=0.2, regression_error=0.1)


def test_regression_alerts_once_per_episode_and_escalates() -> None:
    """A lasting drop alerts once; a deeper drop escalates; recovery ends the episode."""
    detector = _steady_detector()
    assert [f.severity for f in _observe(detector, 5, 0.9)] == ["warning"]
    assert _observe(detector, 6, 0.9) == []  # same episode, same severity
    assert [f.severity for f in _observe(detector, 7, 0.8)] == ["error"]
    assert [f.severity for f in _observe(detector, 8, 0.6)] == ["critical"]
    assert _observe(detector, 9, 0.99) == []  # recovered
    assert [f.severity for f in _observe(detector, 10, 0.9)] == ["warning"]  # a new episode


def test_engine_uses_its_alert_thresholds() -> None:
    """The forced regression above raises no alert when the Engine's thresholds are above it."""
    lenient = AlertThresholds(
        regression_warning=0.97, regression_error=0.98, regression_critical=0.99
    )
    engine = Engine(AgentDesign(), seed=1, population_size=100, alert_thresholds=lenient)
    list(engine.run(generations=40))
    engine.set_parameters(mutation_rate=0.9, elite_count=0)
    alerts = [a for r in engine.run(generations=3) for a in r.alerts]
    assert not [a for a in alerts if a.kind == "fitness_regression"], alerts
    config = engine.store.run_info(engine.run_id or 0).config
    assert config["alert_thresholds"]["regression_warning"] == 0.97


def test_rollback_validation() -> None:
    """Rollback to a generation outside the lineage raises GenerationNotFound; nothing changes."""
    engine = Engine(seed=1, population_size=10)
    with pytest.raises(GenerationNotFound):
        engine.rollback(0)
    list(engine.run(generations=5))
    for bad in (-1, 5, 100):
        with pytest.raises(GenerationNotFound, match=str(bad)):
            engine.rollback(bad)
    with pytest.raises(InvalidParameters):
        engine.rollback("3")  # type: ignore[arg-type]
    assert engine.generation == 4
    assert engine.branch == 0


def test_memory_store_rollback_limit_is_explained() -> None:
    """Without a store, only the newest keep_snapshots generations can be rolled back to."""
    engine = Engine(seed=1, population_size=10, keep_snapshots=5)
    list(engine.run(generations=12))
    with pytest.raises(GenerationNotFound, match="store="):
        engine.rollback(3)
    engine.rollback(8)
    assert engine.generation == 8


def test_rollback_is_exact_in_memory() -> None:
    """In memory: roll back to 25 after 40 generations, rerun: 26..40 match bit for bit."""
    engine = Engine(AgentDesign(), seed=7, population_size=50, mutation_rate=0.15)
    original = {r.generation: r for r in engine.run(generations=41)}
    genes_40 = engine.population.genes.copy() if engine.population is not None else None
    engine.rollback(25)
    assert engine.generation == 25
    assert engine.branch == 1
    again = {r.generation: r for r in engine.run(generations=15)}
    assert sorted(again) == list(range(26, 41))
    for g in range(26, 41):
        a, b = original[g].evolution.to_dict(), again[g].evolution.to_dict()
        for volatile in (
            "timestamp",
            "evaluation_ms",
            "best_agent_id",
            "best_agent_name",
            "branch",
        ):
            a.pop(volatile)
            b.pop(volatile)
        assert a == b, g
    assert engine.population is not None
    assert genes_40 is not None
    assert np.array_equal(engine.population.genes, genes_40)


def test_rollback_restores_parameters_of_that_generation() -> None:
    """Rolling back undoes parameter changes made after the target generation."""
    engine = Engine(seed=7, population_size=30, mutation_rate=0.1)
    list(engine.run(generations=10))
    engine.set_parameters(mutation_rate=0.8, population_size=40)
    list(engine.run(generations=3))
    engine.rollback(8)
    assert engine.params.mutation_rate == 0.1
    assert engine.params.population_size == 30


def test_rollback_announces_log_and_alert() -> None:
    """A rollback publishes a warning log, a "Rollback Performed" alert and a control event
    with the parameters restored."""
    engine = Engine(seed=7, population_size=20)
    list(engine.run(generations=10))
    events: list[object] = []
    engine.subscribe(events.append)
    engine.rollback(4)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["LogEntry", "Alert", "ControlEvent"]
    control = events[2]
    assert isinstance(control, ControlEvent)
    assert (control.action, control.generation) == ("rollback", 4)
    assert control.parameters == engine.params.to_dict()
    alert = events[1]
    assert isinstance(alert, Alert)
    assert alert.kind == "rollback"
    assert "generations 5..9" in alert.message


def test_rastrigin_improves() -> None:
    """On Rastrigin the GA makes real progress (fitness = 1 / (1 + f))."""
    engine = Engine(Rastrigin(dims=5), seed=1, population_size=200, mutation_sigma=0.05)
    results = list(engine.run(generations=60))
    f_first = 1 / results[0].best_fitness - 1
    f_last = 1 / results[-1].best_fitness - 1
    assert f_last < f_first / 3
