"""Run control: the engine's states, the one table of control transitions, and their results.

Every way of controlling a run (``Engine.control``, ``pause()``/``stop()``/``run()``, the
server's ``control`` messages, a dashboard button) goes through :func:`transition`, under the
engine's control lock, so two requests can never both be accepted for one state: the
second sees the state the first left.

.. code-block:: text

    action           from                        to
    start            idle, stopped, failed       running
    pause            running                     paused
    resume           paused                      running
    stop             running, paused             stopped
    set_parameters   any state                   (unchanged)

A run loop that ends by itself leaves ``running``/``paused`` for ``idle`` (its generations
are done) or ``failed`` (an error); those are reported as the actions ``finish`` and
``fail``.

Rollbacks and branches (``Engine.rollback``, ``Engine.branch_from``) change where the run
is, not its state: they are valid in every state and happen between generations. They are
marked in progress here (:meth:`RunControl.moving`), so a branch asked while a rollback or
another branch is in progress is refused rather than applied after it.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tdevlab.exceptions import InvalidCommand, InvalidState

__all__ = [
    "ACTIONS",
    "TRANSITIONS",
    "ControlEvent",
    "ControlResult",
    "EngineState",
    "RollbackResult",
    "RunControl",
    "transition",
]

_T = TypeVar("_T")


class EngineState(enum.Enum):
    """Where a run is."""

    IDLE = "idle"  # created, or a run loop finished its generations
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FAILED = "failed"


_ANY = frozenset(EngineState)

#: action -> (states it is valid in, state it leads to; ``None``: the state does not change).
TRANSITIONS: dict[str, tuple[frozenset[EngineState], EngineState | None]] = {
    "start": (
        frozenset({EngineState.IDLE, EngineState.STOPPED, EngineState.FAILED}),
        EngineState.RUNNING,
    ),
    "pause": (frozenset({EngineState.RUNNING}), EngineState.PAUSED),
    "resume": (frozenset({EngineState.PAUSED}), EngineState.RUNNING),
    "stop": (frozenset({EngineState.RUNNING, EngineState.PAUSED}), EngineState.STOPPED),
    "set_parameters": (_ANY, None),
}
#: The actions a client may ask for (spec: "Control Evolution", plus ``set_parameters``).
ACTIONS: tuple[str, ...] = tuple(TRANSITIONS)


def transition(action: str, state: EngineState) -> EngineState:
    """Return the state ``action`` leads to from ``state``.

    Raises:
        InvalidCommand: for an unknown action, naming it and the known ones.
        InvalidState: if the action is not valid in ``state``; ``details`` has the
            ``state`` and the ``action``.
    """
    entry = TRANSITIONS.get(action) if isinstance(action, str) else None
    if entry is None:
        shown = repr(action[:64] if isinstance(action, str) else type(action).__name__)
        raise InvalidCommand(
            f"unknown control action {shown}; actions are {list(ACTIONS)}",
            details={"action": shown, "state": state.value},
        )
    valid, target = entry
    if state not in valid:
        allowed = sorted(s.value for s in valid)
        raise InvalidState(
            f"cannot {action}: the run is {state.value} (it needs to be {' or '.join(allowed)})",
            details={"state": state.value, "action": action},
        )
    return state if target is None else target


@dataclass(frozen=True)
class ControlResult:
    """What an accepted control action did: everything its acknowledgement reports.

    Attributes:
        action: The action.
        state: The run's state right after it.
        previous_state: The state before it.
        generation: The last generation produced when it was accepted.
        parameters: The parameters in force from the next generation on.
        strategy: The run's strategy: ``{"name": ..., "config": {...}}``.
    """

    action: str
    state: EngineState
    previous_state: EngineState
    generation: int
    parameters: dict[str, Any]
    strategy: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the ack's fields: action, state, generation, parameters, strategy."""
        return {
            "action": self.action,
            "state": self.state.value,
            "generation": self.generation,
            "parameters": self.parameters,
            "strategy": self.strategy,
        }


@dataclass(frozen=True)
class RollbackResult:
    """Where an accepted rollback left the run (what its acknowledgement reports)."""

    generation: int
    branch: int
    state: EngineState

    def to_dict(self) -> dict[str, Any]:
        """Return the ack's fields: generation, branch, state."""
        return {"generation": self.generation, "branch": self.branch, "state": self.state.value}


@dataclass
class ControlEvent:
    """A state change of the run, or a parameter change (the API's ``control_update``).

    ``error`` is the wire form of the error that failed the run (action ``fail``).
    """

    action: str
    state: EngineState
    previous_state: EngineState
    generation: int
    parameters: dict[str, Any]
    error: dict[str, Any] | None = None
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a plain dict (the ``control_update`` data)."""
        data = {
            "action": self.action,
            "state": self.state.value,
            "previous_state": self.previous_state.value,
            "generation": self.generation,
            "parameters": self.parameters,
        }
        if self.error is not None:
            data["error"] = self.error
        return data


class RunControl:
    """The run's control state, owned in one place and changed under one lock.

    A run loop holds a *token*: every accepted ``start`` makes a new one, and a loop whose
    token is no longer current ends after its generation in progress, so a ``stop``
    followed at once by a ``start`` never leaves two loops running.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.state = EngineState.IDLE
        self.token = 0
        self._wakers: list[Callable[[], None]] = []
        self._moves: list[str] = []  # rollbacks and branches in progress

    @contextlib.contextmanager
    def moving(self, action: str, state: EngineState, *, exclusive: bool) -> Iterator[None]:
        """Mark a rollback or branch in progress for the ``with`` block.

        Args:
            action: ``rollback`` or ``branch``.
            state: The run's state, for the refusal's details.
            exclusive: Refuse (rather than wait behind) a move already in progress.

        Raises:
            InvalidState: if ``exclusive`` and another move is in progress; ``details``
                has the ``state`` and the move ``in_progress``.
        """
        with self.cond:
            if exclusive and self._moves:
                busy = self._moves[0]
                raise InvalidState(
                    f"cannot {action}: a {busy} is in progress; try again when it is done",
                    details={"state": state.value, "action": action, "in_progress": busy},
                )
            self._moves.append(action)
        try:
            yield
        finally:
            with self.cond:
                self._moves.remove(action)

    def decide(
        self, action: str, apply: Callable[[EngineState], _T]
    ) -> tuple[EngineState, EngineState, int, _T]:
        """Check ``action`` against the state and, if valid, carry it out atomically.

        ``apply(previous_state)`` runs under the lock after the transition is found valid;
        it validates and applies the action's other changes (parameters) and may raise,
        in which case nothing changes.

        Returns:
            (previous state, new state, the current loop token, what ``apply`` returned).

        Raises:
            InvalidCommand, InvalidState: as :func:`transition`; or whatever ``apply``
                raises.
        """
        with self.cond:
            previous = self.state
            target = transition(action, previous)
            applied = apply(previous)
            self.state = target
            if action == "start":
                self.token += 1
            self.cond.notify_all()
            token = self.token
        self._wake()
        return previous, target, token, applied

    def may_step(self, token: int) -> bool:
        """Block while paused; whether the loop holding ``token`` should make a generation."""
        with self.cond:
            while self.state is EngineState.PAUSED and self.token == token:
                self.cond.wait()
            return self.state is EngineState.RUNNING and self.token == token

    def running(self, token: int) -> bool:
        """Whether the loop holding ``token`` should make a generation now (never blocks)."""
        with self.cond:
            return self.state is EngineState.RUNNING and self.token == token

    def paused(self, token: int) -> bool:
        """Whether the loop holding ``token`` is paused (and should wait)."""
        with self.cond:
            return self.state is EngineState.PAUSED and self.token == token

    def add_waker(self, waker: Callable[[], None]) -> Callable[[], None]:
        """Call ``waker()`` after every state change (an async loop's wake-up); return a
        function that removes it."""
        with self.cond:
            self._wakers.append(waker)

        def remove() -> None:
            with self.cond:
                if waker in self._wakers:
                    self._wakers.remove(waker)

        return remove

    def end(self, token: int, failed: bool) -> tuple[EngineState, EngineState] | None:
        """A loop ended: ``failed``, or its generations done / left early.

        Returns:
            (previous, new) when the state changed, else ``None`` (the loop was
            superseded by a newer start, or stopped).
        """
        with self.cond:
            if token != self.token:
                return None
            previous = self.state
            if failed:
                self.state = EngineState.FAILED
            elif previous in (EngineState.RUNNING, EngineState.PAUSED):
                self.state = EngineState.IDLE
            self.cond.notify_all()
            current = self.state
        self._wake()
        return None if current is previous else (previous, current)

    def _wake(self) -> None:
        with self.cond:
            wakers = list(self._wakers)
        for waker in wakers:
            waker()
