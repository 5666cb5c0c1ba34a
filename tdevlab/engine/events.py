"""The events a generation produces, in the shapes of the WebSocket API's ``data`` objects.

The engine knows nothing of WebSockets: it builds these typed records, a consumer (the
server, a notebook, the store) takes them. Field names follow the spec; fields the spec
does not name are extras a client may ignore.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, overload

import msgspec

__all__ = [
    "AgentStatus",
    "AgentUpdate",
    "AgentUpdates",
    "Alert",
    "EvolutionUpdate",
    "GenerationResult",
    "LogEntry",
]

#: Agent statuses, by the code stored in the population's ``status`` column.
AgentStatus = Literal["evolving", "elite", "violating", "retired"]
STATUS_NAMES: tuple[AgentStatus, ...] = ("evolving", "elite", "violating", "retired")
EVOLVING, ELITE, VIOLATING, RETIRED = range(4)


class EvolutionUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """spec: ``evolution_update`` data, plus extras.

    ``improvement`` is the change of ``best_fitness`` from the previous generation of the
    same lineage (0 for generation 0). ``best_fitness`` is the fitness of the best agent in
    the feasibility-first order (a feasible agent beats an infeasible one).

    The strategy's own measures (:data:`STRATEGY_FIELDS`) are ``None`` when the strategy
    has none (the GA), and then left out of :meth:`to_dict`: NSGA-II reports
    ``front_size`` and ``hypervolume``, MAP-Elites ``archive_coverage`` and ``qd_score``.
    """

    generation: int
    average_fitness: float
    best_fitness: float
    improvement: float
    agents_evolved: int
    mutations_applied: int
    crossovers: int
    # extras
    run_id: int | None
    branch: int
    population_size: int
    feasible_fraction: float
    diversity: float
    worst_fitness: float
    best_agent_id: str
    best_agent_name: str
    best_memory_kb: float
    best_speed_us: float
    mutation_rate: float
    crossover_rate: float
    evaluation_ms: float
    timestamp: float
    # the strategy's measures
    front_size: int | None = None
    hypervolume: float | None = None
    archive_coverage: float | None = None
    qd_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the update as a plain dict (strategy measures only when present)."""
        data = msgspec.structs.asdict(self)
        for name in STRATEGY_FIELDS:
            if data[name] is None:
                del data[name]
        return data


#: EvolutionUpdate fields a strategy fills in (``Strategy.measures``).
STRATEGY_FIELDS: tuple[str, ...] = ("front_size", "hypervolume", "archive_coverage", "qd_score")


class AgentUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """spec: ``agent_update`` data, plus the agent's lineage and genes."""

    agent_id: str
    name: str
    status: AgentStatus
    fitness: float
    memory_kb: float
    speed_us: float
    generation: int
    # extras
    birth_generation: int
    parents: list[str]
    genes: dict[str, Any]
    reason: str  # why it was announced: "new_best", "elite", "left_elite", "status", "requested"

    def to_dict(self) -> dict[str, Any]:
        """Return the update as a plain dict."""
        return msgspec.structs.asdict(self)


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """spec: ``log`` message: a ``level`` beside ``data`` = ``{message, details}``."""

    level: Literal["info", "warning", "error"]
    message: str
    details: dict[str, Any]
    generation: int

    def to_dict(self) -> dict[str, Any]:
        """Return the entry as a plain dict."""
        return msgspec.structs.asdict(self)


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """spec: ``alert`` message: a ``severity`` beside ``data`` (alert_id, title, message, ...)."""

    alert_id: str
    severity: Literal["warning", "error", "critical"]
    kind: str  # "fitness_regression", "constraint_violation", "stagnation", "rollback", ...
    title: str
    message: str
    details: dict[str, Any]
    recommended_action: str | None
    generation: int

    def to_dict(self) -> dict[str, Any]:
        """Return the alert as a plain dict."""
        return msgspec.structs.asdict(self)


class AgentUpdates(Sequence[AgentUpdate]):
    """A generation's agent updates: a read-only sequence, its records built when first read.

    Parts are lists of updates, or batches (``len()``, and ``build()`` giving the list) that
    gathered their agents' values when the generation was made: an archive that changes by
    hundreds of agents a generation costs a few array copies until someone (a listener, an
    export, the caller) reads them. Equal to any sequence of the same updates.
    """

    __slots__ = ("_built", "_parts", "_size")

    def __init__(self, parts: Iterable[Any] = ()) -> None:
        flat: list[Any] = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, AgentUpdates) else [part])
        self._parts: list[Any] = [p for p in flat if len(p)]
        self._size = sum(len(p) for p in self._parts)
        self._built: list[AgentUpdate] | None = None

    @property
    def parts(self) -> list[Any]:
        """The parts, unbuilt (a store may keep a batch as it is)."""
        return self._parts

    def _all(self) -> list[AgentUpdate]:
        built = self._built
        if built is None:
            built = []
            for part in self._parts:
                build = getattr(part, "build", None)
                built.extend(part if build is None else build())
            self._built = built
        return built

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> AgentUpdate: ...
    @overload
    def __getitem__(self, index: slice) -> list[AgentUpdate]: ...
    def __getitem__(self, index: int | slice) -> AgentUpdate | list[AgentUpdate]:
        return self._all()[index]

    def __iter__(self) -> Iterator[AgentUpdate]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return self._all() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compared by content, as a list is

    def __repr__(self) -> str:
        return f"AgentUpdates({self._all()!r})"


class GenerationResult(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one generation produced; what ``Engine.step()`` returns.

    ``agents`` is an :class:`AgentUpdates`: a sequence whose records are built when read.
    """

    evolution: EvolutionUpdate
    agents: Sequence[AgentUpdate]
    logs: list[LogEntry]
    alerts: list[Alert]

    @property
    def generation(self) -> int:
        return self.evolution.generation

    @property
    def best_fitness(self) -> float:
        return self.evolution.best_fitness

    @property
    def average_fitness(self) -> float:
        return self.evolution.average_fitness
