"""The dashboard's logic without widgets, kernel or clock: what is enabled, what to send.

Everything here is a pure function or a small object with an injected clock, so it is tested
without Jupyter, without a server and without sleeping.

Which controls are enabled, per connection and run state (spec: control transitions in
``tdevlab.engine.engine._TRANSITIONS``; rollback in ``Engine.rollback``):

.. code-block:: text

    connection  run state      start  pause  resume  stop  apply  rollback
    open        idle           x                                   x (*)
    open        running               x             x     x       x (*)
    open        paused                       x      x     x       x (*)
    open        stopped        x                                   x (*)
    open        failed         x                                   x (*)
    open        None (unknown) x
    not open    any

    (*) only once a generation exists (a run has started): the engine rolls back between
        generations in any state, and refuses a generation outside the current lineage.

The strategy choice (and its settings) is enabled with Start while the run has no generation
yet: the engine takes a strategy only before generation 0, and Start sends it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONTROLS",
    "PARAMETER_INPUTS",
    "STRATEGY_CHOICES",
    "Command",
    "RedrawThrottle",
    "changed_parameters",
    "command_for",
    "enabled_controls",
    "member_kind",
    "rollback_recommendation",
    "strategy_choosable",
    "strategy_spec",
]

#: The dashboard's buttons, in display order.
CONTROLS: tuple[str, ...] = ("start", "pause", "resume", "stop", "apply", "rollback")

#: The engine parameters the dashboard edits (applied on Start, or with Apply while running).
PARAMETER_INPUTS: tuple[str, ...] = ("population_size", "mutation_rate")

#: The strategy choice: (label, name sent with Start); ``None`` keeps the server's own.
STRATEGY_CHOICES: tuple[tuple[str, str | None], ...] = (
    ("as served", None),
    ("GA", "ga"),
    ("NSGA-II", "nsga2"),
    ("MAP-Elites", "map-elites"),
)
#: The member set each strategy keeps (``frames.front`` / ``frames.archive``).
_KIND_OF_STRATEGY = {"nsga2": "front", "map-elites": "archive"}

# run state -> the run controls valid in it (start/pause/resume/stop/apply)
_RUN_CONTROLS: dict[str | None, frozenset[str]] = {
    "idle": frozenset({"start"}),
    "running": frozenset({"pause", "stop", "apply"}),
    "paused": frozenset({"resume", "stop", "apply"}),
    "stopped": frozenset({"start"}),
    "failed": frozenset({"start"}),
    # Not known yet: Start is the only action that can be first; the server refuses it
    # (shown in the dashboard) if a run is in fact going on.
    None: frozenset({"start"}),
}


def enabled_controls(
    connection_state: str, run_state: str | None, *, generation: int | None = None
) -> frozenset[str]:
    """Return the controls whose action is valid now.

    Args:
        connection_state: The client's connection state (``"open"``, ``"reconnecting"``...).
        run_state: The engine's state (``"idle"``, ``"running"``...), or ``None`` if unknown.
        generation: The latest generation seen, or ``None``; rollback needs one (``>= 0``).

    Returns:
        A subset of :data:`CONTROLS`; empty unless the connection is open.
    """
    if connection_state != "open":
        return frozenset()
    enabled = set(_RUN_CONTROLS.get(run_state, frozenset()))
    if run_state is not None and generation is not None and generation >= 0:
        enabled.add("rollback")
    return frozenset(enabled)


def strategy_choosable(
    connection_state: str, run_state: str | None, *, generation: int | None = None
) -> bool:
    """Whether the strategy can still be chosen: Start is enabled and the run has no
    generation yet (the engine takes a strategy only before generation 0)."""
    start = "start" in enabled_controls(connection_state, run_state, generation=generation)
    return start and generation is None


def strategy_spec(name: str | None, settings: str = "") -> str | dict[str, Any] | None:
    """What Start sends as ``strategy``: the name, or ``{"name", **settings}``.

    Args:
        name: A strategy name, or ``None`` to keep the server's (then nothing is sent).
        settings: The strategy's settings as a JSON object (``'{"bins": [20, 20]}'``), or
            blank.

    Raises:
        ValueError: for settings that are not a JSON object, or settings without a name.
    """
    text = settings.strip()
    if not text:
        return name
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"strategy settings are not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError('strategy settings must be a JSON object, e.g. {"bins": [20, 20]}')
    if name is None:
        raise ValueError("choose a strategy for these settings")
    return {"name": name, **parsed}


def member_kind(strategy: str | None, known: Mapping[str, bool]) -> str | None:
    """The member set the dashboard shows: the run's strategy's (``"front"`` for NSGA-II,
    ``"archive"`` for MAP-Elites), else the one the frames saw, else ``None`` (none)."""
    if strategy is not None:
        return _KIND_OF_STRATEGY.get(strategy)
    return next((kind for kind in ("front", "archive") if known.get(kind)), None)


class RedrawThrottle:
    """Decide when to redraw: only when the data changed, and at most once per interval.

    Args:
        min_interval: Seconds that must pass between two redraws.
        clock: A monotonic clock in seconds (injected so tests need no sleep).
    """

    def __init__(
        self, min_interval: float = 0.5, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not (math.isfinite(min_interval) and min_interval >= 0):
            raise ValueError(f"min_interval must be a finite number >= 0, got {min_interval!r}")
        self.min_interval = min_interval
        self.clock = clock
        self._last_key: Hashable = object()  # equal to no key: the first call draws
        self._last_time = -math.inf

    def due(self, key: Hashable) -> bool:
        """Return True (and remember ``key`` and the time) if a redraw should happen now.

        Args:
            key: What the view shows, e.g. ``frames.version``; an unchanged key never redraws.
        """
        if key == self._last_key:
            return False
        now = self.clock()
        if now - self._last_time < self.min_interval:
            return False
        self._last_key = key
        self._last_time = now
        return True

    def reset(self) -> None:
        """Forget the last key, so the next call to :meth:`due` (in time) redraws."""
        self._last_key = object()


def rollback_recommendation(alert: Mapping[str, Any]) -> int | None:
    """Return the generation an alert recommends rolling back to, or ``None``.

    Args:
        alert: An ``alert`` message as received (``{"type": "alert", "data": {...}}``) or its
            ``data`` (a row of ``frames.alerts``).

    Returns:
        ``details["rollback_generation"]`` when ``recommended_action`` is ``"rollback"``.
    """
    data = alert.get("data", alert)
    if not isinstance(data, Mapping) or data.get("recommended_action") != "rollback":
        return None
    details = data.get("details")
    if not isinstance(details, Mapping):
        return None
    generation = details.get("rollback_generation")
    if isinstance(generation, bool) or not isinstance(generation, int | float):
        return None
    if isinstance(generation, float) and not generation.is_integer():
        return None
    return int(generation)


@dataclass(frozen=True)
class Command:
    """A client call the dashboard makes: ``client.call(method, *args, **kwargs)``."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Return a short readable form, e.g. ``start(population_size=50)``."""
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.method}({', '.join(parts)})"


def changed_parameters(values: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
    """Return the entries of ``values`` that differ from the engine's ``known`` parameters."""
    return {name: value for name, value in values.items() if known.get(name) != value}


def command_for(
    control: str,
    *,
    parameters: Mapping[str, Any],
    known_parameters: Mapping[str, Any],
    rollback_generation: int,
    strategy: str | Mapping[str, Any] | None = None,
) -> Command:
    """Return the command a control's button sends.

    Args:
        control: One of :data:`CONTROLS`.
        parameters: The parameter inputs' values (``population_size``, ``mutation_rate``).
        known_parameters: The engine's last known parameters (``client.parameters``).
        rollback_generation: The rollback input's value.
        strategy: For Start: the strategy to choose (:func:`strategy_spec`), or ``None``.

    Returns:
        Start sends the inputs that differ from the known parameters (all of them when
        nothing is known) and the strategy if one is given; Apply sends those inputs too,
        or all inputs when none differs; Rollback sends the generation; Pause, Resume and
        Stop send no argument.

    Raises:
        ValueError: for an unknown control.
    """
    if control == "start":
        kwargs = changed_parameters(parameters, known_parameters)
        if strategy is not None:
            kwargs["strategy"] = strategy
        return Command("start", kwargs=kwargs)
    if control == "apply":
        changed = changed_parameters(parameters, known_parameters)
        return Command("set_parameters", kwargs=changed or dict(parameters))
    if control in ("pause", "resume", "stop"):
        return Command(control)
    if control == "rollback":
        return Command("rollback", args=(int(rollback_generation),))
    raise ValueError(f"unknown control {control!r}; expected one of {CONTROLS}")
