"""Run control and run loops of the Engine: ``control()``, ``run()``, ``run_async()``.

:meth:`RunLoops.control` is the one way a run's state or parameters change: it validates
the parameters and checks the transition (:mod:`tdevlab.engine.control`) atomically, and
returns what an acknowledgement reports. A loop runs generations while the state is
``running``; it may be a synchronous generator (:meth:`run`), a task of an event loop
(:meth:`run_async`, or ``control_async("start")``), or a thread (``control("start")``).
Whichever it is, pause, resume, stop and parameter changes act between generations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

from tdevlab.engine.control import (
    ControlEvent,
    ControlResult,
    EngineState,
    RunControl,
)
from tdevlab.engine.events import AgentUpdate, Alert, EvolutionUpdate, GenerationResult, LogEntry
from tdevlab.engine.genes import GeneSpace
from tdevlab.engine.params import Parameters
from tdevlab.engine.storage import RunStore
from tdevlab.engine.strategy import Strategy, StrategyState, describe, strategy_from_spec
from tdevlab.exceptions import EvolutionFailed, InvalidParameters, InvalidState, TdevlabError

__all__ = ["EngineEvent", "Listener", "RunLoops"]

log = logging.getLogger("tdevlab.engine")

#: What listeners receive.
EngineEvent: TypeAlias = EvolutionUpdate | AgentUpdate | LogEntry | Alert | ControlEvent
Listener: TypeAlias = Callable[[EngineEvent], None]

#: How long ``control_async("stop")`` waits for the generation in progress to end.
STOP_WAIT = 60.0


class RunLoops:
    """Control and loops; the Engine provides the generation (``_step``) and the store."""

    params: Parameters
    generation: int
    run_id: int | None
    store: RunStore
    space: GeneSpace
    strategy: Strategy
    _strategy_state: StrategyState
    _lock: threading.RLock

    def __init__(self) -> None:
        self._run = RunControl()
        self._listeners: list[Listener] = []
        self._sync_thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._announcing = threading.RLock()  # control actions announced in decided order

    @abstractmethod
    def _step(self, token: int | None = None) -> GenerationResult | None:
        """One generation, announced; for the loop holding ``token``, ``None`` (and nothing
        done) unless that loop is still the running one when the generation begins (it was
        paused, stopped or superseded meanwhile: the loop checks its state again)."""

    @abstractmethod
    def _checked(self, params: Parameters, strategy: Strategy | None = None) -> Parameters: ...

    @abstractmethod
    def _record_side_events(
        self, logs: list[LogEntry], alerts: list[Any], generation: int | None = None
    ) -> None: ...

    # -- the strategy (chosen by control) -------------------------------------------------

    def strategy_description(self) -> dict[str, Any]:
        """The run's strategy: ``{"name": ..., "config": {...}}``."""
        return describe(self.strategy)

    def _strategy_for(self, spec: object) -> Strategy:
        strategy = strategy_from_spec(spec)
        strategy.init(self.space, self.params)  # names unknown objectives, descriptors...
        return strategy

    def _switch_strategy(self, strategy: Strategy, state: EngineState) -> None:
        """Make ``strategy`` the run's (called by control, under its lock).

        Raises:
            InvalidState: once the run has a generation, or while one is being made; the
                same strategy with the same settings is accepted and changes nothing.
        """
        if describe(strategy) == describe(self.strategy):
            return
        if self.generation >= 0:
            raise InvalidState(
                f"the run's strategy is {self.strategy.name!r}: a strategy is chosen before "
                f"the first generation (this run is at generation {self.generation})",
                details={"state": state.value, "strategy": self.strategy.name},
            )
        if not self._lock.acquire(blocking=False):
            raise InvalidState(
                "cannot change the strategy while a generation or an upload is in progress",
                details={"state": state.value, "strategy": self.strategy.name},
            )
        try:
            first_state = strategy.init(self.space, self.params)
            if self.run_id is not None:  # the run's record already exists (a durable store)
                # Stored first: if the store refuses, the run keeps its strategy.
                config = dict(self.store.run_info(self.run_id).config)
                self.store.set_config(self.run_id, {**config, "strategy": describe(strategy)})
            self.strategy = strategy
            self._strategy_state = first_state
        finally:
            self._lock.release()

    # -- listeners and state ---------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event, in order; return an unsubscribe function.

        Events are ``EvolutionUpdate``, ``AgentUpdate``, ``LogEntry``, ``Alert`` and
        ``ControlEvent`` objects. A generation's events are delivered after it is stored.
        Listeners run on the thread that makes the event and must not block; an exception in
        a listener is logged and does not stop the run.
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    @property
    def state(self) -> EngineState:
        """The run's control state."""
        return self._run.state

    def _publish(self, event: EngineEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("engine listener %r failed", listener)

    # -- control ---------------------------------------------------------------------------

    def control(self, action: str, parameters: Mapping[str, Any] | None = None) -> ControlResult:
        """Carry out a control action: the only place a run's state or parameters change.

        ``start`` runs generations in a background thread until ``stop`` (use
        :meth:`control_async` inside an event loop, to run them as a task of it). Parameters
        given with any action are validated, together with the transition, before anything
        changes, and apply from the next generation.

        Args:
            action: ``start``, ``pause``, ``resume``, ``stop`` or ``set_parameters``.
            parameters: Parameter changes (see :class:`Parameters`).

        Returns:
            The state, generation and parameters right after the action.

        Raises:
            InvalidCommand: for an unknown action.
            InvalidState: if the action is not valid now (``details["state"]``).
            InvalidParameters: naming an unknown or invalid parameter.
        """
        result, token = self._decide(action, parameters)
        if action == "start":
            thread = threading.Thread(
                target=self._thread_loop, args=(token,), name="tdevlab-run", daemon=True
            )
            self._thread = thread
            thread.start()
        return result

    async def control_async(
        self,
        action: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        interval: float = 0.0,
    ) -> ControlResult:
        """:meth:`control` inside an event loop: ``start`` runs the loop as a task of it.

        ``stop`` returns once the generation in progress of a loop started here has ended
        (at most :data:`STOP_WAIT` seconds). A run loop started here never raises: a failure sets
        the state to ``failed`` and is published as a ``ControlEvent`` with action
        ``fail`` and the error.

        Args:
            action, parameters: As for :meth:`control`.
            interval: For ``start``: the least seconds between generation starts.

        Raises:
            As :meth:`control`; InvalidParameters for a bad ``interval``.
        """
        _check_interval(interval)
        # In a worker thread: the decision is atomic under the control lock wherever it runs,
        # and its store writes (a log entry, the run's status) may wait for a generation
        # being recorded, which must not stall the event loop.
        result, token = await asyncio.to_thread(self._decide, action, parameters)
        if action == "start":
            self._task = asyncio.get_running_loop().create_task(
                self._background(token, interval), name="tdevlab-run"
            )
            await asyncio.sleep(0)  # the loop task starts before the caller goes on
        elif action == "stop":
            await self.wait_async(STOP_WAIT)
        return result

    async def wait_async(self, seconds: float | None = None) -> bool:
        """Wait until the run loop started by :meth:`control_async` has ended.

        Returns:
            Whether it has (``False``: still running after ``seconds``).
        """
        task = self._task
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait({task}, timeout=seconds)
        return bool(done)

    def _decide(
        self, action: str, parameters: Mapping[str, Any] | None
    ) -> tuple[ControlResult, int]:
        changes = dict(parameters or {})
        spec = changes.pop("strategy", None)
        # Built and checked against the problem before the lock: a bad name changes nothing.
        chosen = None if spec is None else self._strategy_for(spec)

        def apply(previous: EngineState) -> tuple[Parameters, Parameters]:
            old = self.params
            new = old.replace(changes) if changes else old
            if changes or chosen is not None:
                new = self._checked(new, chosen)
            if chosen is not None:
                self._switch_strategy(chosen, previous)  # the last check that can refuse
            self.params = new
            return old, new

        # One control action is announced and persisted at a time, in the order decided: a
        # resume decided after a pause must not be published (or stored) before it.
        with self._announcing:
            previous, state, token, (old, new) = self._run.decide(action, apply)
            self._announce_control(action, previous, state, old, new)
        result = ControlResult(
            action, state, previous, self.generation, new.to_dict(), self.strategy_description()
        )
        return result, token

    def _announce_control(
        self,
        action: str,
        previous: EngineState,
        state: EngineState,
        old: Parameters,
        new: Parameters,
    ) -> None:
        """Log, publish and persist an accepted action. The action is already applied, so
        a store that fails here is logged, not raised: the caller's request succeeded."""
        generation = self.generation
        if new != old:
            before = old.to_dict()
            changed = {k: v for k, v in new.to_dict().items() if before[k] != v}
            entry = LogEntry(
                level="info",
                message=f"Parameters changed: {changed}",
                details={"parameters": changed},
                generation=generation,
            )
            try:
                self._record_side_events([entry], [], generation)
            except Exception:
                log.exception("could not record the parameter change")
            if action != "set_parameters":  # that one is announced below
                self._publish(
                    ControlEvent("set_parameters", previous, previous, generation, new.to_dict())
                )
        if action != "set_parameters" or new != old:
            self._publish(ControlEvent(action, state, previous, generation, new.to_dict()))
        if state is not previous:
            self._persist_status(state)

    def _persist_status(self, state: EngineState) -> None:
        if self.run_id is None:
            return
        try:
            self.store.set_status(self.run_id, state.value)
        except Exception:  # the state is the engine's; the stored copy is informative
            log.exception("could not store the run's status %s", state.value)

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
                details={"state": self.state.value},
            )
        self._decide("pause", None)

    def resume(self) -> None:
        """Resume a paused loop.

        Raises:
            InvalidState: if the engine is not paused.
        """
        self._decide("resume", None)

    def stop(self) -> None:
        """Stop a running or paused loop after the generation in progress.

        Raises:
            InvalidState: if the engine is neither running nor paused.
        """
        self._decide("stop", None)

    def set_parameters(self, **changes: Any) -> Parameters:
        """Change parameters for the next generation; all are validated before any applies.

        Returns:
            The parameters now in force.

        Raises:
            InvalidParameters: naming the unknown or invalid parameter; nothing changes.
        """
        self._decide("set_parameters", changes)
        return self.params

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
        _, token = self._decide("start", None)
        self._sync_thread = threading.get_ident()
        try:
            while remaining is None or remaining > 0:
                if not self._run.may_step(token):
                    return
                result = self._step(token)
                if result is None:  # paused or stopped meanwhile: check the state again
                    continue
                if remaining is not None:
                    remaining -= 1
                yield result
        except BaseException as exc:
            self._end(token, exc)
            raise
        else:
            self._end(token, None)

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
        _check_interval(interval)
        _, token = self._decide("start", None)
        return await self._loop_async(token, remaining, offload, on_result, interval)

    async def _loop_async(
        self,
        token: int,
        remaining: int | None,
        offload: bool,
        on_result: Callable[[GenerationResult], Any] | None,
        interval: float,
    ) -> GenerationResult | None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def waker() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(wake.set)

        remove = self._run.add_waker(waker)
        last = None
        try:
            while remaining is None or remaining > 0:
                while self._run.paused(token):
                    await wake.wait()
                    wake.clear()
                if not self._run.running(token):
                    break
                started = time.monotonic()
                result = (
                    await asyncio.to_thread(self._step, token) if offload else self._step(token)
                )
                if result is None:  # paused or stopped meanwhile: check the state again
                    continue
                last = result
                if remaining is not None:
                    remaining -= 1
                if on_result is not None:
                    on_result(last)
                await asyncio.sleep(0)
                await self._wait_interval(token, wake, started + interval)
        except BaseException as exc:
            self._end(token, exc)
            raise
        finally:
            remove()
        self._end(token, None)
        return last

    async def _wait_interval(self, token: int, wake: asyncio.Event, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic) unless the loop stops being the running one.

        Cleared before each check, so no wake-up is lost and none left from an earlier
        action cuts the wait short; a parameter change wakes it and it waits on.
        """
        while True:
            wake.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._run.running(token):
                return
            try:
                await asyncio.wait_for(wake.wait(), remaining)
            except TimeoutError:
                return

    async def _background(self, token: int, interval: float) -> None:
        # A failure is already the state `failed` and a published ControlEvent("fail").
        with contextlib.suppress(Exception):
            await self._loop_async(token, None, True, None, interval)

    def _thread_loop(self, token: int) -> None:
        try:
            while self._run.may_step(token):
                self._step(token)  # None when paused or stopped meanwhile: may_step decides
        except BaseException as exc:
            self._end(token, exc)
        else:
            self._end(token, None)

    def _end(self, token: int, exc: BaseException | None) -> None:
        if self._sync_thread == threading.get_ident():
            self._sync_thread = None
        with self._announcing:
            self._announce_end(token, exc)

    def _announce_end(self, token: int, exc: BaseException | None) -> None:
        changed = self._run.end(token, isinstance(exc, Exception))
        if changed is None:
            return
        previous, current = changed
        error = None
        if isinstance(exc, Exception):
            failure = (
                exc
                if isinstance(exc, TdevlabError)
                else EvolutionFailed(f"evolution failed: {type(exc).__name__}: {exc}")
            )
            if not isinstance(exc, TdevlabError):
                log.error("evolution loop crashed", exc_info=exc)
            error = failure.to_wire()
        action = "fail" if current is EngineState.FAILED else "finish"
        self._publish(
            ControlEvent(
                action, current, previous, self.generation, self.params.to_dict(), error=error
            )
        )
        self._persist_status(current)
        if isinstance(exc, EvolutionFailed):
            self._publish(
                LogEntry(
                    level="error", message=str(exc), details=exc.details, generation=self.generation
                )
            )


def _check_generations(generations: int | None) -> int | None:
    if generations is None:
        return None
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 0:
        raise InvalidParameters(f"generations={generations!r} must be a non-negative integer")
    return generations


def _check_interval(interval: float) -> None:
    if not (
        isinstance(interval, int | float)
        and not isinstance(interval, bool)
        and 0 <= interval < math.inf
    ):
        raise InvalidParameters(f"interval={interval!r} must be a number of seconds >= 0")
