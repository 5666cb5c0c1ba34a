"""The run store as the engine sees it, and how a store is opened from a path.

The engine records generations, snapshots and events through :class:`RunStore`; the
stores themselves (SQLite, memory) live in :mod:`tdevlab.store`, which depends on the
engine, never the other way round. So that ``Engine(store="runs.db")`` still works,
:mod:`tdevlab.store` installs a :class:`StoreBackend` here when it is imported (``import
tdevlab`` imports it); the engine package alone can only take a store object.

A run is a tree of *branches*: branch 0 starts at generation 0; a rollback to generation
``g`` opens a new branch whose parent is the branch ``g`` belongs to, so the abandoned
generations stay stored under their own branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tdevlab.engine.events import Alert, GenerationResult, LogEntry
from tdevlab.engine.population import Population, Snapshot
from tdevlab.exceptions import InvalidParameters, InvalidState

if TYPE_CHECKING:
    from tdevlab.engine.problems import Problem

__all__ = [
    "MADE_BY",
    "AgentRecords",
    "BranchInfo",
    "RunInfo",
    "RunStore",
    "StoreBackend",
    "export_run",
    "install_backend",
    "made_by_codes",
    "open_store",
]


@dataclass(frozen=True)
class BranchInfo:
    """A branch of a run: where it forked from."""

    branch: int
    parent_branch: int | None
    fork_generation: int  # the last generation it shares with its parent (-1 for branch 0)


@dataclass(frozen=True)
class RunInfo:
    """A stored run's description."""

    run_id: int
    created_at: float
    seed: int
    problem: str
    config: dict[str, Any]
    active_branch: int
    last_generation: int | None
    status: str


#: How an agent was made, by code (the ``made_by`` of its stored row).
MADE_BY: tuple[str, ...] = ("initial", "upload", "mutation", "crossover")


@dataclass(frozen=True)
class AgentRecords:
    """Stored agents as parallel arrays, one entry per agent (what lineage needs).

    Attributes:
        agent: Agent numbers.
        branch: The branch each was born on.
        birth_generation: The generation that made it.
        parent_a, parent_b: Parent numbers (-1: none).
        fitness, memory_kb, speed_us: Its metrics (they never change).
        made_by: Codes into :data:`MADE_BY`.
        changed: ``(n, genes)`` booleans: the genes that differ from its first parent's.
        known: Whether ``changed`` is known (the first parent was at hand when it was made).
    """

    agent: np.ndarray
    branch: np.ndarray
    birth_generation: np.ndarray
    parent_a: np.ndarray
    parent_b: np.ndarray
    fitness: np.ndarray
    memory_kb: np.ndarray
    speed_us: np.ndarray
    made_by: np.ndarray
    changed: np.ndarray
    known: np.ndarray

    COLUMNS = (
        "agent",
        "branch",
        "birth_generation",
        "parent_a",
        "parent_b",
        "fitness",
        "memory_kb",
        "speed_us",
        "made_by",
        "changed",
        "known",
    )

    def __len__(self) -> int:
        return int(self.agent.size)

    def take(self, rows: np.ndarray) -> AgentRecords:
        """The records at ``rows`` (indices or a mask)."""
        return AgentRecords(*(getattr(self, c)[rows] for c in self.COLUMNS))

    @classmethod
    def concat(cls, parts: list[AgentRecords], genes: int) -> AgentRecords:
        """One table of several (an empty one with ``genes`` columns when none)."""
        if not parts:
            return cls.empty(genes)
        return cls(*(np.concatenate([getattr(p, c) for p in parts]) for c in cls.COLUMNS))

    @classmethod
    def empty(cls, genes: int) -> AgentRecords:
        """No agents."""
        ints = np.empty(0, dtype=np.int64)
        floats = np.empty(0, dtype=np.float64)
        flags = np.empty(0, dtype=bool)
        changed = np.empty((0, genes), dtype=bool)
        return cls(ints, ints, ints, ints, ints, floats, floats, floats, ints, changed, flags)

    @classmethod
    def born(
        cls,
        population: Population,
        branch: int,
        generation: int,
        previous: Population | None,
    ) -> AgentRecords:
        """The agents of ``population`` born in ``generation`` (whole arrays, no loop).

        Args:
            population: The generation's population.
            branch: The branch it was recorded on.
            generation: Its number.
            previous: The population it was made from (where first parents are), if at
                hand: the genes changed are unknown without it.
        """
        rows = np.flatnonzero(population.birth_generation == generation)
        parent_a = population.parent_a[rows]
        parent_b = population.parent_b[rows]
        genes = population.genes[rows]
        changed = np.zeros(genes.shape, dtype=bool)
        known = np.zeros(rows.size, dtype=bool)
        if previous is not None and rows.size and len(previous):
            found = _rows_of(previous.agent_id, parent_a)
            known = (parent_a >= 0) & (previous.agent_id[found] == parent_a)
            changed = (genes != previous.genes[found]) & known[:, None]
        made_by = made_by_codes(parent_a, parent_b, population.birth_generation[rows])
        return cls(
            population.agent_id[rows],
            np.full(rows.size, branch, dtype=np.int64),
            population.birth_generation[rows],
            parent_a,
            parent_b,
            population.fitness[rows],
            population.memory_kb[rows],
            population.speed_us[rows],
            made_by,
            changed,
            known,
        )


def _rows_of(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Rows of ``ids`` holding ``wanted`` (any row where one is missing: check after)."""
    low = int(ids.min())
    span = int(ids.max()) - low + 1
    if span <= 8 * ids.size + 1024:  # recent agents: a lookup table beats a sort
        table = np.zeros(span, dtype=np.int64)
        table[ids - low] = np.arange(ids.size)
        rows: np.ndarray = table[np.clip(wanted - low, 0, span - 1)]
        return rows
    order = np.argsort(ids)
    rows = order[np.minimum(np.searchsorted(ids[order], wanted), ids.size - 1)]
    return rows


def made_by_codes(
    parent_a: np.ndarray, parent_b: np.ndarray, birth_generation: np.ndarray
) -> np.ndarray:
    """How agents were made (codes into :data:`MADE_BY`) from their parents: two parents a
    crossover, one a mutation (of a copy), none an initial agent (generation 0) or an
    upload."""
    return np.where(
        parent_b >= 0, 3, np.where(parent_a >= 0, 2, np.where(birth_generation == 0, 0, 1))
    ).astype(np.int64)


class RunStore(Protocol):
    """The operations the engine (and the dataset exporter) need from a run store."""

    #: Whether every generation is kept (SQLite), rather than only recent ones (memory).
    durable: bool

    def create_run(
        self, *, seed: int, problem: str, config: dict[str, Any], created_at: float
    ) -> int:
        """Create a run (with its branch 0) and return its id."""
        ...

    def record_generation(
        self, run_id: int, snapshot: Snapshot, result: GenerationResult, new_ids: tuple[int, int]
    ) -> None:
        """Store one generation atomically: its row, snapshot, announced agents, logs, alerts.

        ``new_ids`` is the inclusive range of agent ids created in this generation.
        """
        ...

    def record_events(
        self, run_id: int, branch: int, generation: int, logs: list[LogEntry], alerts: list[Alert]
    ) -> None:
        """Store logs and alerts that belong to no generation step (rollbacks, control)."""
        ...

    def create_branch(self, run_id: int, parent_branch: int, fork_generation: int) -> int:
        """Open a new branch forking after ``fork_generation`` and make it active."""
        ...

    def branches(self, run_id: int) -> list[BranchInfo]:
        """Return every branch of the run."""
        ...

    def load_snapshot(self, run_id: int, branch: int, generation: int) -> Snapshot:
        """Return generation ``generation`` as seen from ``branch``'s lineage.

        Raises:
            GenerationNotFound: if the lineage has no such generation.
        """
        ...

    def generation_rows(self, run_id: int) -> list[dict[str, Any]]:
        """Return every stored generation row of every branch (evolution update fields)."""
        ...

    def recorded_generations(
        self, run_id: int, after: int = 0, limit: int = -1
    ) -> list[dict[str, Any]]:
        """Generation rows in the order they were recorded, skipping the first ``after``."""
        ...

    def count_generations(self, run_id: int) -> int:
        """How many generation rows the run has recorded (all branches)."""
        ...

    def event_rows(self, run_id: int) -> list[dict[str, Any]]:
        """Return every stored event (agent updates, logs, alerts) in order."""
        ...

    def id_high_water(self, run_id: int) -> tuple[int, int]:
        """The highest agent number and alert number the run ever recorded, in any branch.

        A reopened engine numbers new agents and alerts above them: ids are never reused,
        even after a rollback made in another process.
        """
        ...

    def find_agent_generation(self, run_id: int, agent_id: int) -> tuple[int, int] | None:
        """Return (branch, generation) of the generation that created ``agent_id``."""
        ...

    def agent_records(self, run_id: int, agents: list[int]) -> AgentRecords:
        """The stored rows of ``agents`` that exist (any branch), each once, in the order
        asked."""
        ...

    def first_parent_line(self, run_id: int, agent: int, depth: int) -> AgentRecords:
        """``agent``'s row, then its first parent's, and so on, ``depth`` steps at most.

        Stops early at an agent without a first parent, or one not stored. Empty if
        ``agent`` is not stored.
        """
        ...

    def descendants(
        self, run_id: int, agent: int, depth: int, limit: int
    ) -> tuple[AgentRecords, np.ndarray, bool]:
        """The stored descendants of ``agent`` by first parent, within ``depth`` steps.

        Returns:
            Their rows in order of birth (generation, then number), their levels (steps
            from ``agent``), and whether there are more than ``limit`` (then the first
            ``limit``).
        """
        ...

    def set_status(self, run_id: int, status: str) -> None:
        """Record the run's state (idle, running, failed, ...)."""
        ...

    def set_config(self, run_id: int, config: dict[str, Any]) -> None:
        """Replace the run's configuration (the engine does so only before generation 0)."""
        ...

    def run_info(self, run_id: int) -> RunInfo:
        """Describe one run.

        Raises:
            RunNotFound: for an unknown id.
        """
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


class StoreBackend(Protocol):
    """Opens stores from paths and writes run datasets (installed by :mod:`tdevlab.store`)."""

    def open(self, where: str | Path | None, keep_snapshots: int | None) -> RunStore:
        """A SQLite store at ``where``, or a memory store keeping ``keep_snapshots``."""
        ...

    def export(
        self, store: RunStore, run_id: int, path: str | Path, format: str, problem: Problem
    ) -> Path:
        """Write a run as a dataset directory; return the directory."""
        ...


_backend: StoreBackend | None = None


def install_backend(backend: StoreBackend) -> None:
    """Make ``backend`` the way paths become stores and runs become datasets."""
    global _backend
    _backend = backend


def _installed() -> StoreBackend:
    if _backend is None:
        raise InvalidState(
            "no run store backend: import tdevlab (or tdevlab.store) to open stores by path"
        )
    return _backend


def open_store(store: object, keep_snapshots: int | None) -> tuple[RunStore, bool]:
    """Return the store for ``store`` and whether the caller opened it (and so closes it).

    ``None`` is a memory store keeping ``keep_snapshots`` generations, a path a SQLite
    store, and a store object is taken as it is.

    Raises:
        InvalidParameters: for anything else.
    """
    if store is None or isinstance(store, str | Path):
        return _installed().open(store, keep_snapshots), True
    if hasattr(store, "record_generation"):
        return store, False  # type: ignore[return-value]
    raise InvalidParameters(
        f"store must be None, a path or a run store, got {type(store).__name__}"
    )


def export_run(
    store: RunStore, run_id: int, path: str | Path, format: str, problem: Problem
) -> Path:
    """Write a stored run as a dataset directory (see :func:`tdevlab.store.export_run`)."""
    return _installed().export(store, run_id, path, format, problem)
