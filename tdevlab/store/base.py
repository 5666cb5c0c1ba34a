"""What a run store keeps, and the interface both stores (SQLite, memory) implement.

A run is a tree of *branches*: branch 0 starts at generation 0; a rollback to generation
``g`` opens a new branch whose parent is the branch ``g`` belongs to. A branch's
*lineage* is the chain of (branch, first generation, last generation) ranges that make
up its history, so the abandoned generations stay stored under their own branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tdevlab.engine.events import Alert, GenerationResult, LogEntry
from tdevlab.engine.population import Snapshot

__all__ = ["BranchInfo", "RunInfo", "RunStoreBase", "lineage_of"]


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


class RunStoreBase(Protocol):
    """The operations the engine and the exporters need from a store."""

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

    def set_status(self, run_id: int, status: str) -> None:
        """Record the run's state (idle, running, failed, ...)."""
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


def lineage_of(branches: dict[int, BranchInfo], branch: int) -> list[tuple[int, int, int | None]]:
    """Return ``branch``'s history as (branch, first generation, last generation or None).

    The list runs from the newest range back to branch 0. ``None`` means "open ended".
    """
    out: list[tuple[int, int, int | None]] = []
    upper: int | None = None
    current: int | None = branch
    while current is not None:
        info = branches[current]
        out.append((current, info.fork_generation + 1, upper))
        upper = info.fork_generation
        current = info.parent_branch
    return out


def branch_holding(branches: dict[int, BranchInfo], branch: int, generation: int) -> int | None:
    """Return which branch stores ``generation`` in ``branch``'s lineage (None if beyond it)."""
    for b, low, high in lineage_of(branches, branch):
        if generation >= low and (high is None or generation <= high):
            return b
    return None
