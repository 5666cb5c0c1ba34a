"""The SQLite run store: exact rollback with branches, crash safety, reopening, bad files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tdevlab import AgentDesign, Engine, GenerationNotFound, RunNotFound, SQLiteStore, StoreError
from tdevlab.store.export import build_dataset
from tests.conftest import MS

VOLATILE = ("timestamp", "evaluation_ms", "best_agent_id", "best_agent_name", "branch")


def _stable(row: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in row.items() if k not in VOLATILE}


def test_rollback_exact_and_abandoned_branch_kept(tmp_path: Path) -> None:
    """40 generations, back to 25, 15 more: 26..40 equal the originals; branch 0 stays stored."""
    db = tmp_path / "runs.db"
    engine = Engine(AgentDesign(), population_size=100, mutation_rate=0.15, seed=7, store=db)
    list(engine.run(generations=41))  # generations 0..40
    original_40 = engine.store.load_snapshot(engine.run_id or 0, 0, 40)
    engine.rollback(25)
    list(engine.run(generations=15))  # 26..40 on branch 1
    assert engine.generation == 40
    run_id = engine.run_id or 0
    engine.close()

    with SQLiteStore(db) as store:
        rows = store.generation_rows(run_id)
        by_branch: dict[int, dict[int, dict[str, object]]] = {}
        for row in rows:
            by_branch.setdefault(int(row["branch"]), {})[int(row["generation"])] = row
        assert sorted(by_branch[0]) == list(range(41))  # the abandoned branch, whole
        assert sorted(by_branch[1]) == list(range(26, 41))
        for g in range(26, 41):
            assert _stable(by_branch[1][g]) == _stable(by_branch[0][g]), g
        replay_40 = store.load_snapshot(run_id, 1, 40)
        for name in ("genes", "fitness", "memory_kb", "speed_us", "violation", "status"):
            a = getattr(original_40.population, name)
            b = getattr(replay_40.population, name)
            assert a.tobytes() == b.tobytes(), name
        assert original_40.state["rng"] == replay_40.state["rng"]
        branches = store.branches(run_id)
        assert [(b.branch, b.parent_branch, b.fork_generation) for b in branches] == [
            (0, None, -1),
            (1, 0, 25),
        ]
        # Generation 10 seen from branch 1 is branch 0's generation 10 (shared history).
        assert store.load_snapshot(run_id, 1, 10).branch == 0
        info = store.run_info(run_id)
        assert (info.active_branch, info.last_generation) == (1, 40)


def test_rollback_survives_reopen(tmp_path: Path) -> None:
    """A rollback made in one process is continued exactly by a later Engine.open."""
    db = tmp_path / "runs.db"
    reference = Engine(seed=3, population_size=40)
    expected = [r.best_fitness for r in reference.run(generations=21)]

    with Engine(seed=3, population_size=40, store=db) as engine:
        list(engine.run(generations=16))
        engine.rollback(12)
    with Engine.open(db, 1) as engine:
        assert (engine.generation, engine.branch) == (12, 1)
        again = [r.best_fitness for r in engine.run(generations=8)]
    assert again == expected[13:21]


def test_reopened_rollback_never_reuses_agent_or_alert_ids(tmp_path: Path) -> None:
    """After a rollback and a reopen, new agents and alerts get ids above every branch's."""
    db = tmp_path / "runs.db"
    with Engine(seed=3, population_size=40, store=db) as engine:
        list(engine.run(generations=16))
        engine.rollback(12)  # announces a "Rollback Performed" alert
    with Engine.open(db, 1) as engine:
        engine.set_parameters(mutation_rate=0.4)  # so the new branch's agents differ
        list(engine.run(generations=8))
        data = build_dataset(engine.store, 1)
    # One id, one agent: its metrics are the same on every row it appears in.
    metrics = data.population.groupby("agent_id")[["fitness", "memory_kb", "speed_us"]].nunique()
    assert (metrics == 1).all().all()
    reborn = data.population[
        (data.population["branch"] == 1) & (data.population["generation"] > 12)
    ]
    assert reborn["agent_id"].str[6:].astype(int).max() > 40 * 16
    alerts = data.alerts["alert_id"]
    assert alerts.is_unique
    assert len(alerts) >= 1


def test_store_file_is_in_wal_mode(tmp_path: Path) -> None:
    """The store file uses write-ahead logging: another connection reads journal_mode 'wal'."""
    db = tmp_path / "runs.db"
    with Engine(seed=1, population_size=10, store=db) as engine:
        list(engine.run(generations=2))
        # WAL is a property of the file, seen by any connection, even while the store is open.
        with sqlite3.connect(db) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with sqlite3.connect(db) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_refuses_foreign_and_newer_files(tmp_path: Path) -> None:
    """A non-tdevlab SQLite file or a newer schema raises StoreError naming the file."""
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(StoreError, match="not a tdevlab run store"):
        SQLiteStore(foreign)
    newer = tmp_path / "newer.db"
    SQLiteStore(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="schema 99"):
        SQLiteStore(newer)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="garbage.db"):
        SQLiteStore(garbage)


def test_unknown_run_and_generation(tmp_path: Path) -> None:
    """Unknown run ids and generations raise RunNotFound / GenerationNotFound."""
    db = tmp_path / "runs.db"
    with Engine(seed=1, population_size=10, store=db) as engine:
        list(engine.run(generations=3))
    with SQLiteStore(db) as store:
        with pytest.raises(RunNotFound, match="no run 7"):
            store.run_info(7)
        with pytest.raises(GenerationNotFound, match="generation 9"):
            store.load_snapshot(1, 0, 9)
    with pytest.raises(RunNotFound):
        Engine.open(db, 7)


def test_several_runs_in_one_store(tmp_path: Path) -> None:
    """Runs in the same file are independent and listed in order."""
    db = tmp_path / "runs.db"
    for seed in (1, 2):
        with Engine(seed=seed, population_size=10, store=db) as engine:
            list(engine.run(generations=3 + seed))
    with SQLiteStore(db) as store:
        runs = store.runs()
    assert [(r.run_id, r.seed, r.last_generation) for r in runs] == [(1, 1, 3), (2, 2, 4)]


CHILD = textwrap.dedent(
    """
    import sys
    from tdevlab import Engine, AgentDesign
    engine = Engine(AgentDesign(), population_size=200, seed=21, store=sys.argv[1])
    for result in engine.run(generations=100000):
        print(result.generation, flush=True)
    """
)


def test_killed_process_loses_no_announced_generation(tmp_path: Path) -> None:
    """SIGKILL mid-run: every yielded generation is stored complete; the run continues exactly."""
    db = tmp_path / "runs.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    announced = []
    assert child.stdout is not None
    for line in child.stdout:
        announced.append(int(line))
        if len(announced) >= 30:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10_000 * MS)
    assert child.returncode == -signal.SIGKILL

    with SQLiteStore(db) as store:
        info = store.run_info(1)
        assert info.last_generation is not None
        assert info.last_generation >= announced[-1]
        rows = {int(r["generation"]): r for r in store.generation_rows(1)}
        assert sorted(rows) == list(range(info.last_generation + 1))
        for g in announced:
            snap = store.load_snapshot(1, 0, g)
            assert snap.population.genes.shape == (200, len(AgentDesign().gene_space))
            assert float(snap.population.fitness.max()) == pytest.approx(
                max(float(rows[g]["best_fitness"]), float(snap.population.fitness.max()))
            )
            assert np.isfinite(snap.population.fitness).all()
            assert snap.state["rng"]["bit_generator"] == "PCG64"
        events = store.event_rows(1)
        assert {int(e["generation"]) for e in events if e["kind"] == "log"} >= set(announced[1:])

    last = info.last_generation
    with Engine.open(db, 1) as engine:
        assert engine.generation == last
        continued = [r.evolution for r in engine.run(generations=3)]
    reference = Engine(AgentDesign(), population_size=200, seed=21)
    expected = {r.generation: r.evolution for r in reference.run(generations=last + 4)}
    for update in continued:
        e = expected[update.generation]
        assert (update.best_fitness, update.average_fitness, update.mutations_applied) == (
            e.best_fitness,
            e.average_fitness,
            e.mutations_applied,
        )


def test_schema_1_store_is_migrated_and_continues(tmp_path: Path) -> None:
    """A store of schema 1 (before strategy measures) opens as the current schema; runs go on."""
    import sqlite3

    from tdevlab import Engine
    from tdevlab.engine.events import STRATEGY_FIELDS
    from tdevlab.store.sqlite import SCHEMA_VERSION

    db = tmp_path / "old.db"
    with Engine(seed=1, population_size=10, store=db) as engine:
        list(engine.run(generations=3))
        run_id = engine.run_id
    raw = sqlite3.connect(db)
    for name in STRATEGY_FIELDS:  # what a schema-1 file looks like
        raw.execute(f"ALTER TABLE generations DROP COLUMN {name}")
    raw.execute("PRAGMA user_version=1")
    raw.commit()
    raw.close()
    assert run_id is not None
    with Engine.open(db, run_id) as engine:
        list(engine.run(generations=2))
        rows = engine.store.generation_rows(run_id)
    assert [r["generation"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(r[name] is None for r in rows for name in STRATEGY_FIELDS)
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    check.close()
