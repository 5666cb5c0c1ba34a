"""Engine.control: the one owner of run control (transitions and parameters, atomically)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import numpy as np
import pytest

from tdevlab import Engine, MemoryStore, Sphere
from tdevlab.engine.control import (
    ACTIONS,
    TRANSITIONS,
    ControlEvent,
    EngineState,
    transition,
)
from tdevlab.exceptions import InvalidCommand, InvalidParameters, InvalidState, StoreError
from tests.conftest import eventually, eventually_sync, timeout

TIMEOUT = timeout(10)


def _engine(**kwargs: Any) -> Engine:
    return Engine(Sphere(dims=3), seed=1, population_size=8, **kwargs)


@pytest.mark.parametrize("state", list(EngineState))
@pytest.mark.parametrize("action", ACTIONS)
def test_transition_table_is_total(action: str, state: EngineState) -> None:
    """Every (action, state) pair is either a target state or InvalidState naming the state."""
    valid, target = TRANSITIONS[action]
    if state in valid:
        assert transition(action, state) == (state if target is None else target)
    else:
        with pytest.raises(InvalidState) as info:
            transition(action, state)
        assert info.value.details == {"state": state.value, "action": action}


@pytest.mark.parametrize("action", ["fly", "", "START", "start|stop"])
def test_unknown_action_is_named(action: str) -> None:
    """An unknown action is INVALID_COMMAND naming it and the known actions."""
    with pytest.raises(InvalidCommand) as info:
        _engine().control(action)
    assert repr(action) in str(info.value)
    assert all(known in str(info.value) for known in ACTIONS)
    assert info.value.details["state"] == "idle"


def test_bad_parameters_with_start_change_nothing() -> None:
    """start with an invalid parameter is refused; state and parameters stay as they were."""
    engine = _engine()
    events: list[Any] = []
    engine.subscribe(events.append)
    before = engine.params
    with pytest.raises(InvalidParameters, match="mutation_rate"):
        engine.control("start", {"population_size": 20, "mutation_rate": 7})
    assert engine.state is EngineState.IDLE
    assert engine.params == before
    assert events == []


def test_start_with_parameters_is_one_decision() -> None:
    """start applies its parameters and the transition together, announced in order."""
    engine = _engine()
    events: list[Any] = []
    engine.subscribe(lambda e: events.append(e) if isinstance(e, ControlEvent) else None)
    result = engine.control("start", {"population_size": 10})
    try:
        assert (result.action, result.state, result.previous_state) == (
            "start",
            EngineState.RUNNING,
            EngineState.IDLE,
        )
        assert result.parameters["population_size"] == 10
        assert [e.action for e in events[:2]] == ["set_parameters", "start"]
        eventually_sync(lambda: engine.generation >= 2)
        assert engine.population is not None
        assert len(engine.population) == 10
    finally:
        engine.control("stop")
        assert engine._thread is not None
        engine._thread.join(TIMEOUT)
    assert engine.state is EngineState.STOPPED


def test_concurrent_starts_from_threads_one_wins() -> None:
    """Eight threads start at once, 50 times: exactly one is accepted each time."""
    engine = _engine()
    for _ in range(50):
        barrier = threading.Barrier(8)
        outcomes: list[str] = []

        def start(barrier: threading.Barrier = barrier, outcomes: list[str] = outcomes) -> None:
            barrier.wait()
            try:
                engine.control("start")
                outcomes.append("ack")
            except InvalidState as exc:
                outcomes.append(exc.details["state"])

        threads = [threading.Thread(target=start) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert sorted(outcomes) == ["ack"] + ["running"] * 7
        engine.control("stop")
    assert engine._thread is not None
    engine._thread.join(TIMEOUT)
    assert engine.state is EngineState.STOPPED


def test_stop_then_start_never_runs_two_loops() -> None:
    """A start right after a stop supersedes the old loop: generations stay one at a time."""
    engine = _engine()
    made: list[int] = []
    engine.subscribe(lambda e: made.append(e.generation) if hasattr(e, "best_fitness") else None)
    for _ in range(20):
        engine.control("start")
        engine.control("stop")
    engine.control("start")
    eventually_sync(lambda: engine.generation >= 30)
    engine.control("stop")
    assert engine._thread is not None
    engine._thread.join(TIMEOUT)
    assert made == list(range(len(made)))  # each generation once, in order


def test_set_parameters_in_every_state() -> None:
    """set_parameters is valid in any state and leaves the state as it is."""
    engine = _engine()
    assert engine.control("set_parameters", {"mutation_rate": 0.3}).state is EngineState.IDLE
    engine.control("start")
    engine.control("pause")
    result = engine.control("set_parameters", {"mutation_rate": 0.4})
    assert (result.state, result.parameters["mutation_rate"]) == (EngineState.PAUSED, 0.4)
    engine.control("stop")


async def test_control_async_runs_the_loop_on_the_event_loop() -> None:
    """control_async(start) runs generations as a task; stop returns once it has ended."""
    engine = _engine()
    result = await engine.control_async("start", {"mutation_rate": 0.2})
    assert result.state is EngineState.RUNNING
    await eventually(lambda: engine.generation >= 3)
    with pytest.raises(InvalidState):
        await engine.control_async("start")
    stopped = await engine.control_async("stop")
    assert stopped.state is EngineState.STOPPED
    # The loop has ended (not merely been told to): no generation can follow.
    generation = engine.generation
    assert await engine.wait_async(0)
    assert engine.generation == generation


async def test_a_failing_loop_publishes_fail_with_the_error() -> None:
    """A loop that fails sets the state to failed and publishes the error with it."""

    class Exploding(Sphere):
        calls = 0

        def evaluate(self, genes: Any) -> Any:
            self.calls += 1
            if self.calls > 2:
                raise RuntimeError("boom")
            return super().evaluate(genes)

    engine = Engine(Exploding(dims=2), seed=1, population_size=6)
    events: list[ControlEvent] = []
    engine.subscribe(lambda e: events.append(e) if isinstance(e, ControlEvent) else None)
    await engine.control_async("start")
    assert await engine.wait_async(TIMEOUT)
    assert engine.state is EngineState.FAILED
    failed = events[-1]
    assert failed.action == "fail"
    assert failed.error is not None
    assert failed.error["code"] == "EVOLUTION_FAILED"
    assert "boom" in failed.error["message"]
    # A failed run can be started again (and fails again here, cleanly).
    assert (await engine.control_async("start")).state is EngineState.RUNNING


async def test_generation_interval_holds_after_control_actions() -> None:
    """A control action (here set_parameters) does not cut later interval waits short."""
    engine = _engine()
    made: list[float] = []
    engine.subscribe(
        lambda e: made.append(time.monotonic()) if hasattr(e, "best_fitness") else None
    )
    interval = 0.2
    await engine.control_async("start", interval=interval)
    await eventually(lambda: len(made) >= 2)
    await engine.control_async("set_parameters", {"mutation_rate": 0.2})
    count = len(made)
    await eventually(lambda: len(made) >= count + 4)
    await engine.control_async("stop")
    gaps = np.diff(made[count - 1 :])
    # Each generation starts at least an interval after the previous one started; these are
    # the times generations ended, which a loaded machine moves by tens of milliseconds
    # either way. A wait cut short would leave a gap of one generation's few milliseconds.
    assert gaps.min() >= interval / 2, gaps


class _FailingStatusStore(MemoryStore):
    fail = False

    def set_status(self, run_id: int, status: str) -> None:
        if self.fail:
            raise StoreError("database is locked")
        super().set_status(run_id, status)


def test_a_failing_status_write_does_not_undo_an_accepted_start() -> None:
    """The store refusing the status write after a start is logged; the run does start."""
    store = _FailingStatusStore()
    engine = Engine(Sphere(dims=2), seed=1, population_size=6, store=store)
    engine.ensure_run()
    store.fail = True
    result = engine.control("start")
    assert result.state is EngineState.RUNNING
    eventually_sync(lambda: engine.generation >= 2)  # a loop really runs
    engine.control("stop")
    assert engine._thread is not None
    engine._thread.join(TIMEOUT)


def test_control_events_are_published_in_decided_order() -> None:
    """Pause and resume from two threads: the last event published is the final state."""
    for _ in range(30):
        engine = _engine()
        events: list[ControlEvent] = []
        engine.subscribe(
            lambda e, events=events: events.append(e) if isinstance(e, ControlEvent) else None
        )
        engine.control("start")
        barrier = threading.Barrier(2)

        def flip(
            action: str, barrier: threading.Barrier = barrier, engine: Engine = engine
        ) -> None:
            barrier.wait()
            with contextlib.suppress(InvalidState):
                engine.control(action)

        threads = [threading.Thread(target=flip, args=(a,)) for a in ("pause", "resume")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert events[-1].state is engine.state
        engine.control("stop")
        assert engine._thread is not None
        engine._thread.join(TIMEOUT)
