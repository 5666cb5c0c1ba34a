"""A run's large strategy-state texts are written once in a SQLite store, and read back
exactly: snapshots, reopened runs, older files, damaged files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tdevlab import Engine, Rastrigin, SQLiteStore, StoreError
from tdevlab.engine.strategy import Offspring
from tdevlab.store import lineage_table
from tdevlab.store.shared_texts import SHARED_MIN
from tdevlab.store.sqlite import SCHEMA_VERSION


class Pickling:
    """A strategy whose state holds a large text replaced every ``every`` generations (as
    the pycma adapter's pickled optimizer) and a small per-generation record."""

    name = "pickling"
    config: dict[str, Any] = {}

    def __init__(self, every: int = 3) -> None:
        self.every = every

    def init(self, space: Any, params: Any) -> dict[str, Any]:
        return {}

    def ask(self, rng: np.random.Generator, state: Any, run: Any) -> tuple[Offspring, Any]:
        return Offspring(run.space.random(rng, run.params.population_size)), state

    def tell(
        self, rng: np.random.Generator, state: Any, run: Any, offspring: Any, scored: Any
    ) -> tuple[np.ndarray, Any]:
        n = 0 if run.population is None else len(run.population)
        keep = n + np.arange(len(offspring.genes))
        if "blob" not in state or run.generation % self.every == 0:
            blob = f"{run.generation:06d}" + "A" * (SHARED_MIN + 100)
            return keep, {"blob": blob, "told": [], "short": "s" * 10}
        return keep, {**state, "told": [*state["told"], float(scored.score.max())]}


def _engine(db: Path | None, **kwargs: Any) -> Engine:
    return Engine(
        Rastrigin(dims=3), strategy=Pickling(), seed=4, population_size=8, store=db, **kwargs
    )


def _texts(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT run_id, text FROM texts ORDER BY text").fetchall()


def test_a_large_text_is_written_once_and_every_snapshot_reads_it_back(tmp_path: Path) -> None:
    """Ten generations, four distinct large texts: four rows in texts, none in the
    snapshots' state; each snapshot loads as the engine recorded it, and equal to a
    memory-store run's."""
    db = tmp_path / "runs.db"
    with _engine(db) as engine:
        list(engine.run(generations=10))
        run_id = engine.run_id
        assert run_id is not None
        loaded = [engine.store.load_snapshot(run_id, 0, g).state for g in range(10)]
    memory = _engine(None, keep_snapshots=None)
    list(memory.run(generations=10))
    expected = [memory.store.load_snapshot(memory.run_id or 0, 0, g).state for g in range(10)]
    assert loaded == expected
    assert [t[:6] for _, t in _texts(db)] == ["000000", "000003", "000006", "000009"]
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT state, shared FROM snapshots ORDER BY generation").fetchall()
    assert all(len(state) < SHARED_MIN and shared == '["blob"]' for state, shared in rows)


def test_a_reopened_run_continues_exactly_and_writes_no_text_twice(tmp_path: Path) -> None:
    """Closed mid-run and reopened (nothing remembered), the run goes on as one that was
    never closed, and a text already stored is not stored again."""
    db = tmp_path / "runs.db"
    with _engine(db) as engine:
        list(engine.run(generations=5))
        run_id = engine.run_id
    assert run_id is not None
    with Engine.open(db, run_id, strategy=Pickling()) as engine:
        list(engine.run(generations=5))
        rows = engine.store.generation_rows(run_id)
    straight = _engine(None)
    reference = [straight.step().evolution.to_dict() for _ in range(10)]
    assert [r["best_fitness"] for r in rows] == [r["best_fitness"] for r in reference]
    assert len(_texts(db)) == 4


def test_a_failed_write_does_not_count_its_text_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generation whose transaction rolls back leaves no text behind, and the same
    snapshot recorded again afterwards writes it (no row ever points at a missing text)."""
    db = tmp_path / "runs.db"
    calls: list[tuple[Any, ...]] = []

    def disk_error(*args: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with _engine(db) as engine:
        list(engine.run(generations=3))
        run_id = engine.run_id
        assert run_id is not None
        real = engine.store.record_generation

        def failing(*args: Any) -> None:
            calls.append(args)
            with monkeypatch.context() as patch:
                patch.setattr(lineage_table, "insert", disk_error)
                real(*args)

        monkeypatch.setattr(engine.store, "record_generation", failing)
        with pytest.raises(StoreError, match="disk I/O error"):
            engine.step()  # generation 3: a new text, rolled back
        assert len(_texts(db)) == 1
        real(*calls[0])  # the very same snapshot (the same text object), now written
        blob = calls[0][1].state["strategy"]["blob"]
        assert engine.store.load_snapshot(run_id, 0, 3).state["strategy"]["blob"] == blob
    assert [t[:6] for _, t in _texts(db)] == ["000000", "000003"]


def test_a_schema_3_store_is_migrated_and_its_old_rows_still_load(tmp_path: Path) -> None:
    """A file written before the texts table (its states whole, no shared column) opens
    as schema 4: its snapshots load as they were, and new generations share their texts."""
    db = tmp_path / "runs.db"
    with _engine(db) as engine:
        list(engine.run(generations=4))
        run_id = engine.run_id
        before = [engine.store.load_snapshot(run_id or 0, 0, g).state for g in range(4)]
    assert run_id is not None
    with sqlite3.connect(db) as raw:  # what a schema-3 file looks like
        for (generation,) in raw.execute("SELECT generation FROM snapshots").fetchall():
            raw.execute(
                "UPDATE snapshots SET state = ? WHERE generation = ?",
                (json.dumps(before[generation]), generation),
            )
        raw.execute("DROP TABLE texts")
        raw.execute("ALTER TABLE snapshots DROP COLUMN shared")
        raw.execute("PRAGMA user_version=3")
    with Engine.open(db, run_id, strategy=Pickling()) as engine:
        assert [engine.store.load_snapshot(run_id, 0, g).state for g in range(4)] == before
        list(engine.run(generations=3))
        assert engine.store.load_snapshot(run_id, 0, 6).state["strategy"]["blob"][:6] == "000006"
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    # Generations 4 and 5 still carry generation 3's text: written once, for them.
    assert [t[:6] for _, t in _texts(db)] == ["000003", "000006"]


def test_a_missing_text_is_a_store_error_naming_it(tmp_path: Path) -> None:
    """A damaged file (a text row deleted) fails the load clearly, not with a KeyError."""
    db = tmp_path / "runs.db"
    with _engine(db) as engine:
        list(engine.run(generations=2))
        run_id = engine.run_id
    with sqlite3.connect(db) as raw:
        raw.execute("DELETE FROM texts")
    with (
        SQLiteStore(db) as store,
        pytest.raises(StoreError, match="damaged: no strategy text 'blob'"),
    ):
        store.load_snapshot(run_id or 0, 0, 1)


def test_a_pycma_run_stores_its_optimizer_once_per_pickle(tmp_path: Path) -> None:
    """The pycma adapter's ~47 KB pickle, replaced every PICKLE_EVERY generations, is
    stored that often; a snapshot row holds only the tell records."""
    pytest.importorskip("cma")
    from tdevlab.engine.adapters.cma_es import PICKLE_EVERY

    db = tmp_path / "runs.db"
    generations = 2 * PICKLE_EVERY + 1
    with Engine(Rastrigin(dims=10), strategy="cmaes", seed=1, population_size=64, store=db) as e:
        list(e.run(generations=generations))
    with sqlite3.connect(db) as raw:
        (largest,) = raw.execute("SELECT max(length(state)) FROM snapshots").fetchone()
    assert len(_texts(db)) == 3  # generations 0, PICKLE_EVERY and 2 * PICKLE_EVERY
    assert largest < PICKLE_EVERY * 1000  # the tell records: ~700 characters a generation
