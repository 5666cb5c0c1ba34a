"""A run store in memory: what an engine uses when no database is given.

Memory stays bounded on long runs and large populations: it keeps the newest
``keep_generations`` generation rows (and up to eight times as many agent updates, logs and
alerts; a generation's agent updates kept as the values gathered for them, built when read)
and the newest snapshots, at most ``keep_snapshots`` of them and at most ``keep_bytes`` of
arrays, so rollback reaches that far back and an export covers that window. Recording
keeps references (a population's arrays are never modified after they are built); a
generation most of whose rows come from the one before (an archive) is then kept as its
changes to it (:mod:`tdevlab.store.changes`), several times smaller, and made back whole
when read. Lineage finds the agents born in the kept generations (read from their
snapshots when asked), so it reaches back as far as rollback does. Use the SQLite store to
keep a whole run.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tdevlab.engine.agents import AgentBatch
from tdevlab.engine.events import AgentUpdates, Alert, EvolutionUpdate, GenerationResult, LogEntry
from tdevlab.engine.lineage import RecordsIndex
from tdevlab.engine.population import Snapshot
from tdevlab.engine.storage import AgentRecords
from tdevlab.exceptions import GenerationNotFound, InvalidParameters, RunNotFound
from tdevlab.store.base import BranchInfo, RunInfo, branch_holding
from tdevlab.store.changes import CHECKPOINT, Changes
from tdevlab.store.rows import event_row, generation_row

__all__ = ["MemoryStore"]


@dataclass
class _Run:
    info: RunInfo
    branches: dict[int, BranchInfo]
    results: deque[tuple[int, EvolutionUpdate]]
    # Events in order; an entry of kind "agent_batch" is several agent updates, unbuilt
    # (an `AgentBatch`), counted as that many against the bound.
    events: deque[tuple[int, int, str, Any, float]]
    dropped: int = 0  # generation rows no longer kept (the oldest)
    event_count: int = 0  # events kept, a batch counted by its size
    # Kept generations, oldest first: whole, or as changes to the one they were made from.
    snapshots: OrderedDict[tuple[int, int], Snapshot | _Kept] = field(default_factory=OrderedDict)
    # Per kept generation, the kept generations stored as changes to it.
    dependents: dict[tuple[int, int], set[tuple[int, int]]] = field(default_factory=dict)
    # The generation last made back from changes (reading them in order makes one step each).
    made: Snapshot | None = None
    snapshot_bytes: int = 0
    # The bytes of each kept snapshot's arrays, summed once when it is recorded.
    snapshot_sizes: dict[tuple[int, int], int] = field(default_factory=dict)
    # `info.last_generation` is refreshed only when the info is read: a frozen dataclass's
    # `replace` every generation was a tenth of this store's cost of recording one.
    last_generation: int | None = None
    # (first id, last id, branch, generation) per generation, in creation order.
    new_ids: deque[tuple[int, int, int, int]] = field(default_factory=deque)
    # The agents born in the kept generations, sorted by number: built from the snapshots
    # when lineage asks (None: to rebuild), so recording a generation costs nothing more.
    index: RecordsIndex | None = None
    born: dict[tuple[int, int], AgentRecords | None] = field(default_factory=dict)


class MemoryStore:
    """Keeps runs in memory.

    Args:
        keep_snapshots: How many generation snapshots to keep per run (oldest dropped
            first); ``None`` keeps all. Rollback further back raises ``GenerationNotFound``.
        keep_generations: How many generation rows to keep per run.
        keep_bytes: The most bytes of population arrays the snapshots of a run may hold
            (oldest dropped first; the newest is always kept); ``None``: no byte bound.
    """

    durable = False

    def __init__(
        self,
        keep_snapshots: int | None = 512,
        keep_generations: int = 20_000,
        keep_bytes: int | None = 256 * 1024 * 1024,
    ) -> None:
        if keep_snapshots is not None and keep_snapshots < 1:
            raise InvalidParameters(f"keep_snapshots={keep_snapshots} must be >= 1 or None")
        if keep_generations < 1:
            raise InvalidParameters(f"keep_generations={keep_generations} must be >= 1")
        if keep_bytes is not None and keep_bytes < 1:
            raise InvalidParameters(f"keep_bytes={keep_bytes} must be >= 1 or None")
        self.keep_snapshots = keep_snapshots
        self.keep_generations = keep_generations
        self.keep_bytes = keep_bytes
        self._runs: dict[int, _Run] = {}
        # Kept generations are read (rollback, lineage, exports) from other threads while
        # the engine records; making one back from changes reads several entries.
        self._lock = threading.RLock()

    def _run(self, run_id: int) -> _Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFound(f"no run {run_id} in this memory store") from None

    def create_run(
        self, *, seed: int, problem: str, config: dict[str, Any], created_at: float
    ) -> int:
        run_id = len(self._runs) + 1
        info = RunInfo(run_id, created_at, seed, problem, config, 0, None, "idle")
        # About 8 events a generation (elite changes, mutation logs, alerts).
        self._runs[run_id] = _Run(
            info,
            {0: BranchInfo(0, None, -1)},
            results=deque(maxlen=self.keep_generations),
            events=deque(),
        )
        return run_id

    def record_generation(
        self, run_id: int, snapshot: Snapshot, result: GenerationResult, new_ids: tuple[int, int]
    ) -> None:
        run = self._run(run_id)
        if len(run.results) == self.keep_generations:
            run.dropped += 1
            run.new_ids.popleft()
        # Only the row: agent updates live in `events`, which has its own bound.
        run.results.append((snapshot.branch, result.evolution))
        key = (snapshot.branch, snapshot.generation)
        with self._lock:
            if key in run.snapshots:
                _forget(run, key)
            run.snapshots[key] = snapshot
            size = run.snapshot_sizes[key] = _nbytes(snapshot)
            run.snapshot_bytes += size
            _compact_parent(run, snapshot)
            run.index = None
            run.born.pop(key, None)  # recorded again: made again when asked
            while len(run.snapshots) > 1 and (
                (self.keep_snapshots is not None and len(run.snapshots) > self.keep_snapshots)
                or (self.keep_bytes is not None and run.snapshot_bytes > self.keep_bytes)
            ):
                _forget(run, next(iter(run.snapshots)))
        run.new_ids.append((new_ids[0], new_ids[1], snapshot.branch, snapshot.generation))
        g, b, t = snapshot.generation, snapshot.branch, result.evolution.timestamp
        agents = result.agents
        entries: list[tuple[int, int, str, Any, float]] = []
        for part in agents.parts if isinstance(agents, AgentUpdates) else [agents]:
            if isinstance(part, AgentBatch):  # kept unbuilt: built if the events are read
                entries.append((b, g, "agent_batch", part, t))
            else:
                entries.extend((b, g, "agent_update", agent, t) for agent in part)
        entries.extend((b, g, "log", log, t) for log in result.logs)
        entries.extend((b, g, "alert", alert, t) for alert in result.alerts)
        self._add_events(run, entries)
        run.last_generation = g

    def _add_events(self, run: _Run, entries: list[tuple[int, int, str, Any, float]]) -> None:
        """Append events, then drop the oldest beyond eight per kept generation row."""
        run.events.extend(entries)
        run.event_count += sum(len(e[3]) if e[2] == "agent_batch" else 1 for e in entries)
        bound = 8 * self.keep_generations
        while run.event_count > bound and len(run.events) > 1:
            _, _, kind, event, _ = run.events.popleft()
            run.event_count -= len(event) if kind == "agent_batch" else 1

    def record_events(
        self, run_id: int, branch: int, generation: int, logs: list[LogEntry], alerts: list[Alert]
    ) -> None:
        run = self._run(run_id)
        now = time.time()
        entries: list[tuple[int, int, str, Any, float]] = [
            (branch, generation, "log", log, now) for log in logs
        ]
        entries += [(branch, generation, "alert", alert, now) for alert in alerts]
        self._add_events(run, entries)

    def create_branch(self, run_id: int, parent_branch: int, fork_generation: int) -> int:
        run = self._run(run_id)
        branch = max(run.branches) + 1
        run.branches[branch] = BranchInfo(branch, parent_branch, fork_generation)
        run.info = replace(run.info, active_branch=branch)
        run.last_generation = fork_generation
        return branch

    def branches(self, run_id: int) -> list[BranchInfo]:
        return list(self._run(run_id).branches.values())

    def load_snapshot(self, run_id: int, branch: int, generation: int) -> Snapshot:
        run = self._run(run_id)
        holder = branch_holding(run.branches, branch, generation)
        snapshot = None
        if holder is not None:
            with self._lock:
                if (holder, generation) in run.snapshots:
                    snapshot = _snapshot(run, (holder, generation))
        if snapshot is None:
            kept = (
                ""
                if self.keep_snapshots is None
                else f" (memory keeps the last {self.keep_snapshots}, within keep_bytes; "
                "pass store= to keep all)"
            )
            raise GenerationNotFound(
                f"generation {generation} is not available in run {run_id}{kept}",
                details={"generation": generation},
            )
        return snapshot

    def generation_rows(self, run_id: int) -> list[dict[str, Any]]:
        run = self._run(run_id)
        return [generation_row(evolution, branch) for branch, evolution in run.results]

    def recorded_generations(
        self, run_id: int, after: int = 0, limit: int = -1
    ) -> list[dict[str, Any]]:
        """Generation rows in recording order, skipping the first ``after``."""
        run = self._run(run_id)
        start = max(after - run.dropped, 0)
        stop = len(run.results) if limit < 0 else min(start + limit, len(run.results))
        kept = itertools.islice(run.results, start, stop)
        return [generation_row(evolution, branch) for branch, evolution in kept]

    def count_generations(self, run_id: int) -> int:
        """How many generation rows the run has recorded (all branches)."""
        run = self._run(run_id)
        return run.dropped + len(run.results)

    def event_rows(self, run_id: int) -> list[dict[str, Any]]:
        run = self._run(run_id)
        rows: list[dict[str, Any]] = []
        for branch, generation, kind, event, timestamp in list(run.events):
            if kind == "agent_batch":  # built now: one row per agent
                for agent in event.build():
                    rows.append(
                        event_row(
                            len(rows) + 1, branch, generation, "agent_update", agent, timestamp
                        )
                    )
            else:
                rows.append(event_row(len(rows) + 1, branch, generation, kind, event, timestamp))
        return rows

    def id_high_water(self, run_id: int) -> tuple[int, int]:
        run = self._run(run_id)
        agents = max((r[1] for r in run.new_ids), default=0)
        alerts = max(
            (
                int(e.alert_id.rsplit("-", 1)[1])
                for _, _, kind, e, _ in run.events
                if kind == "alert"
            ),
            default=0,
        )
        return agents, alerts

    def find_agent_generation(self, run_id: int, agent_id: int) -> tuple[int, int] | None:
        run = self._run(run_id)
        lows = np.fromiter((r[0] for r in run.new_ids), dtype=np.int64, count=len(run.new_ids))
        i = int(np.searchsorted(lows, agent_id, side="right")) - 1
        if i >= 0 and run.new_ids[i][0] <= agent_id <= run.new_ids[i][1]:
            return run.new_ids[i][2], run.new_ids[i][3]
        return None

    def _index(self, run_id: int) -> RecordsIndex:
        run = self._run(run_id)
        index = run.index
        if index is None:
            # The engine may record (and drop) generations meanwhile, from its thread: the
            # lock is taken a generation at a time, so a run goes on while this is built.
            with self._lock:
                kept = list(run.snapshots)
            genes = len(run.info.config.get("gene_space") or ())
            born = {key: run.born.get(key) for key in kept}
            for branch, generation in kept:
                if born[(branch, generation)] is not None:
                    continue
                holder = branch_holding(run.branches, branch, generation - 1)
                parent = None if holder is None else (holder, generation - 1)
                with self._lock:
                    if (branch, generation) not in run.snapshots:
                        continue  # dropped meanwhile
                    made_from = (
                        _snapshot(run, parent)
                        if parent is not None and parent in run.snapshots
                        else None
                    )
                    population = _snapshot(run, (branch, generation)).population
                born[(branch, generation)] = AgentRecords.born(
                    population,
                    branch,
                    generation,
                    None if made_from is None else made_from.population,
                )
            run.born = born  # each generation's agents made once, dropped with its snapshot
            index = run.index = RecordsIndex(
                AgentRecords.concat([b for b in born.values() if b is not None], genes)
            )
        return index

    def agent_records(self, run_id: int, agents: list[int]) -> AgentRecords:
        return self._index(run_id).agent_records(agents)

    def first_parent_line(self, run_id: int, agent: int, depth: int) -> AgentRecords:
        return self._index(run_id).first_parent_line(agent, depth)

    def descendants(
        self, run_id: int, agent: int, depth: int, limit: int
    ) -> tuple[AgentRecords, np.ndarray, bool]:
        return self._index(run_id).descendants(agent, depth, limit)

    def set_status(self, run_id: int, status: str) -> None:
        run = self._run(run_id)
        run.info = replace(run.info, status=status)

    def set_config(self, run_id: int, config: dict[str, Any]) -> None:
        run = self._run(run_id)
        run.info = replace(run.info, config=dict(config))

    def run_info(self, run_id: int) -> RunInfo:
        return _info(self._run(run_id))

    def runs(self) -> list[RunInfo]:
        """Describe every run."""
        return [_info(r) for r in self._runs.values()]

    def close(self) -> None:
        """Nothing to release."""


def _info(run: _Run) -> RunInfo:
    info = run.info
    if info.last_generation != run.last_generation:
        info = run.info = replace(info, last_generation=run.last_generation)
    return info


def _nbytes(snapshot: Snapshot | _Kept) -> int:
    if isinstance(snapshot, _Kept):
        return snapshot.changes.nbytes
    return sum(int(a.nbytes) for a in snapshot.population.arrays().values())


@dataclass(frozen=True)
class _Kept:
    """A kept generation stored as :class:`Changes` to its parent generation."""

    generation: int
    branch: int
    state: dict[str, Any]
    changes: Changes


def _compact_parent(run: _Run, snapshot: Snapshot) -> None:
    """Keep the generation ``snapshot`` was made from as changes to its own parent, when
    it is whole, is not a checkpoint, came mostly from that parent, and that is kept."""
    generation = snapshot.generation - 1
    holder = branch_holding(run.branches, snapshot.branch, generation)
    parent_key = None if holder is None else (holder, generation)
    parent = run.snapshots.get(parent_key) if parent_key is not None else None
    if not isinstance(parent, Snapshot) or parent.source is None or generation % CHECKPOINT == 0:
        return
    base_holder = branch_holding(run.branches, parent.branch, generation - 1)
    base = None if base_holder is None else (base_holder, generation - 1)
    if base is None or base not in run.snapshots:
        return
    assert parent_key is not None
    changes = Changes.of(base, parent.population, parent.source)
    if changes is None:
        return
    _replace(run, parent_key, _Kept(parent.generation, parent.branch, parent.state, changes))
    run.dependents.setdefault(base, set()).add(parent_key)


def _replace(run: _Run, key: tuple[int, int], entry: Snapshot | _Kept) -> None:
    """Put ``entry`` in place of the kept generation ``key`` (same place in the order)."""
    run.snapshots[key] = entry
    size = _nbytes(entry)
    run.snapshot_bytes += size - run.snapshot_sizes[key]
    run.snapshot_sizes[key] = size


def _forget(run: _Run, key: tuple[int, int]) -> None:
    """Drop a kept generation; the ones stored as changes to it are made whole first."""
    for dependent in sorted(run.dependents.pop(key, ())):
        if isinstance(run.snapshots.get(dependent), _Kept):
            whole = _snapshot(run, dependent)
            _replace(
                run,
                dependent,
                Snapshot(whole.generation, whole.branch, whole.population, whole.state),
            )
    entry = run.snapshots.pop(key)
    run.snapshot_bytes -= run.snapshot_sizes.pop(key)
    if isinstance(entry, _Kept):
        run.dependents.get(entry.changes.base, set()).discard(key)
    if run.made is not None and (run.made.branch, run.made.generation) == key:
        run.made = None


def _snapshot(run: _Run, key: tuple[int, int]) -> Snapshot:
    """The kept generation ``key`` whole (made back from changes when stored as those)."""
    entry = run.snapshots[key]
    if isinstance(entry, Snapshot):
        return entry
    made = run.made
    if made is not None and (made.branch, made.generation) == key:
        return made
    chain = [entry]
    while True:
        base = chain[-1].changes.base
        if made is not None and (made.branch, made.generation) == base:
            population = made.population
            break
        below = run.snapshots[base]
        if isinstance(below, Snapshot):
            population = below.population
            break
        chain.append(below)
    for kept in reversed(chain):
        population = kept.changes.apply(population)
    snapshot = Snapshot(entry.generation, entry.branch, population, entry.state)
    run.made = snapshot
    return snapshot
