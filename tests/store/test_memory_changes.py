"""The memory store keeps an archive's generations as changes, and gives them back whole.

Every kept generation, made back from its changes, is bit for bit the population and the
state the engine recorded: across branches made by rollbacks, checkpoints, evictions by
count and by bytes, and readers in another thread.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tdevlab import Engine, MemoryStore
from tdevlab.engine.population import Population, Snapshot
from tdevlab.engine.storage import AgentRecords
from tdevlab.exceptions import GenerationNotFound
from tdevlab.store import memory
from tdevlab.store.changes import CHECKPOINT
from tests.engine.test_multi_strategies import _map_elites, _nsga2


class Recorded(MemoryStore):
    """A memory store that also keeps a copy of everything it was given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.given: dict[tuple[int, int], tuple[dict[str, np.ndarray], Any]] = {}

    def record_generation(self, run_id: int, snapshot: Snapshot, *args: Any) -> None:
        arrays = {k: v.copy() for k, v in snapshot.population.arrays().items()}
        self.given[(snapshot.branch, snapshot.generation)] = (arrays, snapshot.state)
        super().record_generation(run_id, snapshot, *args)


def _assert_kept_whole(store: Recorded, engine: Engine) -> int:
    """Every kept generation reads back as recorded; returns how many are kept as changes."""
    run_id = engine.run_id
    assert run_id is not None
    run = store._runs[run_id]
    assert run.snapshot_bytes == sum(memory._nbytes(e) for e in run.snapshots.values())
    for (branch, generation), entry in list(run.snapshots.items()):
        snapshot = store.load_snapshot(run_id, branch, generation)
        arrays, state = store.given[(branch, generation)]
        assert snapshot.state == state
        for column in Population.COLUMNS:
            got, want = getattr(snapshot.population, column), arrays[column]
            assert got.dtype == want.dtype, column
            assert got.tobytes() == want.tobytes(), (branch, generation, column)
        assert entry.generation == generation
    return sum(isinstance(e, memory._Kept) for e in run.snapshots.values())


def test_an_archive_is_kept_as_changes_and_read_back_whole() -> None:
    """Generations between checkpoints are kept as changes, far smaller than whole, and
    each reads back as recorded, in any order (also after rollbacks made branches)."""
    store = Recorded(keep_snapshots=None)
    engine = _map_elites(store=store)
    for _ in range(2 * CHECKPOINT + 5):
        engine.step()
    engine.rollback(CHECKPOINT + 3)
    for _ in range(9):
        engine.step()
    engine.rollback(10)
    for _ in range(4):
        engine.step()
    compact = _assert_kept_whole(store, engine)
    run = store._runs[engine.run_id or 0]
    assert compact >= 2 * CHECKPOINT - 6
    kept = [e for e in run.snapshots.values() if isinstance(e, memory._Kept)]
    whole = [e for e in run.snapshots.values() if isinstance(e, Snapshot)]
    # Whole: the checkpoints, the tip of each of the three branches (no child yet), and the
    # first generations (nothing before, or mostly new agents).
    others = [(e.branch, e.generation) for e in whole if e.generation % CHECKPOINT]
    assert sorted(others) == [(0, 1), (0, 2 * CHECKPOINT + 4), (1, CHECKPOINT + 12), (2, 14)]
    mean_kept = np.mean([e.changes.nbytes for e in kept])
    mean_whole = np.mean([memory._nbytes(e) for e in whole])
    assert mean_kept < mean_whole / 3
    # Read newest first, then oldest first: each made back from its own chain.
    for key in [*reversed(run.snapshots), *run.snapshots]:
        assert store.load_snapshot(engine.run_id or 0, *key).generation == key[1]


@pytest.mark.parametrize(
    ("keep", "keep_bytes"), [(1, None), (2, None), (7, None), (40, None), (None, 60_000)]
)
def test_evicting_a_generation_others_are_kept_against_makes_them_whole(
    keep: int | None, keep_bytes: int | None
) -> None:
    """Bounded by count or by bytes, the oldest go first; generations kept as changes to
    one that goes are made whole first, so every one kept still reads back as recorded,
    and rollback reaches each of them."""
    store = Recorded(keep_snapshots=keep, keep_bytes=keep_bytes)
    engine = _map_elites(store=store)
    for _ in range(3 * CHECKPOINT):
        engine.step()
    run = store._runs[engine.run_id or 0]
    engine.rollback(max(engine.generation - 3, next(iter(run.snapshots))[1]))
    for _ in range(CHECKPOINT + 2):
        engine.step()
    _assert_kept_whole(store, engine)
    if keep is not None:
        assert len(run.snapshots) == keep
    else:
        assert keep_bytes is not None
        assert run.snapshot_bytes <= keep_bytes or len(run.snapshots) == 1
    oldest = next(iter(run.snapshots))
    assert isinstance(run.snapshots[oldest], Snapshot)  # never kept against a dropped one
    engine.rollback(oldest[1])
    assert engine.generation == oldest[1]


def test_fronts_and_ga_populations_are_kept_whole_when_changes_would_not_be_smaller() -> None:
    """A GA replaces its population (its rows are its own matrix: no sources); an
    NSGA-II population is kept as changes only when most of it survived."""
    for make in (_nsga2, lambda **kw: Engine(seed=2, population_size=20, **kw)):
        store = Recorded()
        engine = make(store=store)
        for _ in range(12):
            engine.step()
        _assert_kept_whole(store, engine)
    run = store._runs[engine.run_id or 0]
    assert all(isinstance(e, Snapshot) for e in run.snapshots.values())


def test_lineage_from_changes_is_lineage_from_whole_populations(tmp_path: Path) -> None:
    """The memory store's lineage (read from generations kept as changes) answers as the
    SQLite store does for the same branched archive run."""
    engines = [_map_elites(store=tmp_path / "run.db"), _map_elites()]
    for engine in engines:
        for _ in range(CHECKPOINT + 8):
            engine.step()
        engine.rollback(20)
        for _ in range(6):
            engine.step()
    sqlite, mem = engines
    run = sqlite.run_id or 0
    assert any(
        isinstance(e, memory._Kept) for e in mem.store._runs[mem.run_id or 0].snapshots.values()
    )
    pop = mem.population
    assert pop is not None
    asked = [*pop.agent_id[:10].tolist(), 5, 77, 400]
    a, b = sqlite.store.agent_records(run, asked), mem.store.agent_records(run, asked)
    for column in AgentRecords.COLUMNS:
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column), column)
    for agent in pop.agent_id[:5].tolist():
        a = sqlite.store.first_parent_line(run, agent, 30)
        b = mem.store.first_parent_line(run, agent, 30)
        for column in AgentRecords.COLUMNS:
            np.testing.assert_array_equal(getattr(a, column), getattr(b, column), column)


def test_readers_in_another_thread_see_whole_generations_while_the_run_records() -> None:
    """Rollback targets, exports and lineage are read from server threads while the engine
    records: a reader always gets a whole generation, as recorded."""
    store = Recorded(keep_snapshots=24)
    engine = _map_elites(store=store)
    engine.step()
    run_id = engine.run_id or 0
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = 0

    def read() -> None:
        nonlocal reads
        rng = np.random.default_rng(0)
        while not stop.is_set() and reads < 100_000:
            try:
                keys = list(store._runs[run_id].snapshots)
                key = keys[int(rng.integers(0, len(keys)))]
                try:
                    snapshot = store.load_snapshot(run_id, *key)
                except GenerationNotFound:  # dropped meanwhile: the store says so
                    continue
                want = store.given[key][0]["agent_id"]
                assert snapshot.population.agent_id.tobytes() == want.tobytes()
                reads += 1
                if reads % 50 == 0:  # lineage reads every kept generation
                    asked = snapshot.population.agent_id[:3].tolist()
                    records = store.agent_records(run_id, asked)
                    assert set(records.agent.tolist()) <= set(asked)
            except BaseException as exc:
                errors.append(exc)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for step in range(3000):  # at least 150 generations, and until the reader read 60
        engine.step()
        if step >= 150 and (reads >= 60 or errors):
            break
    stop.set()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert not errors, errors[:1]
    assert reads >= 50  # some lineage reads among them
    _assert_kept_whole(store, engine)
