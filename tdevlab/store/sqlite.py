"""The SQLite run store (stdlib ``sqlite3``, WAL): every generation of every run, durable.

Each generation is written in one transaction -- its row, its snapshot (the population's
arrays as raw little-endian blobs, the RNG and engine state as JSON), its agent updates,
logs and alerts -- before the engine announces it. With WAL and ``synchronous=NORMAL`` a
committed transaction survives the process being killed at any moment (the OS holds the
WAL); ``durability="full"`` also survives power loss, at an fsync per generation.

Tables: ``runs``, ``branches``, ``generations``, ``snapshots``, ``events``, ``lineage``, ``texts``.
The schema version is SQLite's ``user_version``. ``lineage`` holds each generation's new agents
as one row (:mod:`tdevlab.store.lineage_table`); ``texts`` a run's large strategy-state texts,
written once (:mod:`tdevlab.store.shared_texts`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from tdevlab.engine.events import STRATEGY_FIELDS, Alert, GenerationResult, LogEntry
from tdevlab.engine.population import Population, Snapshot
from tdevlab.engine.storage import AgentRecords
from tdevlab.exceptions import GenerationNotFound, InvalidParameters, RunNotFound, StoreError
from tdevlab.store import lineage_table
from tdevlab.store.base import BranchInfo, RunInfo, branch_holding
from tdevlab.store.rows import EVENT_COLUMNS, GENERATION_COLUMNS, event_row, generation_row
from tdevlab.store.shared_texts import TEXTS_SCHEMA, SharedTexts, add_to_schema

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

# 2: the generations' strategy measures (events.STRATEGY_FIELDS); 3: the lineage table;
# 4: large strategy-state texts written once per run (the texts table, snapshots.shared)
SCHEMA_VERSION = 4

# Blob columns of a snapshot and their dtypes (explicit little-endian: files move machines).
_ARRAYS: dict[str, str] = {
    "genes": "<f8",
    "fitness": "<f8",
    "memory_kb": "<f8",
    "speed_us": "<f8",
    "violation": "<f8",
    "agent_id": "<i8",
    "parent_a": "<i8",
    "parent_b": "<i8",
    "birth_generation": "<i8",
    "status": "i1",
}

_GEN_TYPES = {
    "branch": "INTEGER NOT NULL",
    "generation": "INTEGER NOT NULL",
    "best_agent_id": "TEXT",
    "best_agent_name": "TEXT",
}

_EVENT_TYPES = {"branch": "INTEGER", "generation": "INTEGER", "timestamp": "REAL"}

_SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    seed TEXT NOT NULL,
    problem TEXT NOT NULL,
    config TEXT NOT NULL,
    active_branch INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'idle'
);
CREATE TABLE IF NOT EXISTS branches (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    branch INTEGER NOT NULL,
    parent_branch INTEGER,
    fork_generation INTEGER NOT NULL,
    PRIMARY KEY (run_id, branch)
);
CREATE TABLE IF NOT EXISTS generations (
    run_id INTEGER NOT NULL,
    {", ".join(f"{c} {_GEN_TYPES.get(c, 'REAL')}" for c in GENERATION_COLUMNS)},
    first_new_id INTEGER NOT NULL,
    last_new_id INTEGER NOT NULL,
    PRIMARY KEY (run_id, branch, generation),
    FOREIGN KEY (run_id, branch) REFERENCES branches(run_id, branch)
);
CREATE INDEX IF NOT EXISTS generations_new_ids ON generations(run_id, first_new_id);
CREATE TABLE IF NOT EXISTS snapshots (
    run_id INTEGER NOT NULL,
    branch INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    size INTEGER NOT NULL,
    {", ".join(f"{c} BLOB NOT NULL" for c in _ARRAYS)},
    state TEXT NOT NULL,
    shared TEXT,
    PRIMARY KEY (run_id, branch, generation),
    FOREIGN KEY (run_id, branch, generation) REFERENCES generations(run_id, branch, generation)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL,
    {", ".join(f"{c} {_EVENT_TYPES.get(c, 'TEXT')}" for c in EVENT_COLUMNS[1:])}
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, seq);
"""
    + lineage_table.LINEAGE_SCHEMA
    + ";"
    + TEXTS_SCHEMA
)

_INTEGER_FIELDS = {"agents_evolved", "mutations_applied", "crossovers", "population_size"}


class SQLiteStore:
    """A run store in a SQLite file.

    Args:
        path: The database file (created when missing, with its folder).
        durability: ``"normal"`` (survives a killed process) or ``"full"`` (also power loss).

    Raises:
        StoreError: if the file is not a tdevlab store, or of a newer schema.

    The store is safe to share between threads (one connection, one lock): an engine may
    write from a worker thread while a server reads.
    """

    durable = True

    def __init__(self, path: str | Path, durability: Literal["normal", "full"] = "normal") -> None:
        if durability not in ("normal", "full"):
            raise InvalidParameters(f"durability={durability!r} must be 'normal' or 'full'")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._gene_counts: dict[int, int] = {}
        self._last: dict[int, Snapshot] = {}  # per run: the last generation recorded
        self._texts = SharedTexts()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            # Before WAL (fixed after): 16 KB pages write a snapshot's genes blobs in a
            # quarter of the pages; measured ~30% less time per recorded generation.
            self._db.execute("PRAGMA page_size=16384")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={durability.upper()}")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has store schema {version}; this tdevlab reads up to "
                    f"{SCHEMA_VERSION}: upgrade tdevlab"
                )
            if version == 0:
                tables = self._db.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type='table'"
                ).fetchone()[0]
                if tables:
                    raise StoreError(
                        f"{self.path} is a SQLite database but not a tdevlab run store"
                    )
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if version in (1, 2, 3):
                # Additive, so first: the lineage backfill below reads snapshots.shared.
                with self._tx() as db:
                    add_to_schema(db)
            if version == 1:
                self._migrate_from_1()
            if version in (1, 2):
                self._migrate_from_2()
            if version in (1, 2, 3):
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open run store {self.path}: {exc}") from exc

    def _migrate_from_1(self) -> None:
        """Schema 1 -> 2: add the strategy measures to the generations (NULL for old rows)."""
        with self._tx() as db:
            present = {row[1] for row in db.execute("PRAGMA table_info(generations)")}
            for name in STRATEGY_FIELDS:
                if name not in present:
                    db.execute(f"ALTER TABLE generations ADD COLUMN {name} REAL")
            db.execute("PRAGMA user_version=2")

    def _migrate_from_2(self) -> None:
        """Schema 2 -> 3: the lineage table, filled from the stored snapshots."""

        def load(run_id: int, branch: int, generation: int) -> Population | None:
            try:
                return self.load_snapshot(run_id, branch, generation).population
            except GenerationNotFound:
                return None

        with self._tx() as db:
            for statement in lineage_table.LINEAGE_SCHEMA.split(";"):
                if statement.strip():  # executescript would commit the transaction
                    db.execute(statement)
            lineage_table.backfill(db, load)
            db.execute("PRAGMA user_version=3")

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    # -- runs ------------------------------------------------------------------------------

    def create_run(
        self, *, seed: int, problem: str, config: dict[str, Any], created_at: float
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs (created_at, seed, problem, config) VALUES (?, ?, ?, ?)",
                (created_at, str(seed), problem, json.dumps(config)),
            )
            run_id = int(cur.lastrowid or 0)
            db.execute(
                "INSERT INTO branches (run_id, branch, parent_branch, fork_generation) "
                "VALUES (?, 0, NULL, -1)",
                (run_id,),
            )
        return run_id

    def run_info(self, run_id: int) -> RunInfo:
        with self._lock:
            row = self._db.execute(
                "SELECT run_id, created_at, seed, problem, config, active_branch, status "
                "FROM runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id} in {self.path}", details={"run_id": run_id})
            branches = {b.branch: b for b in self.branches(run_id)}
            last = self._last_generation(run_id, row[5], branches)
        return RunInfo(
            row[0], row[1], int(row[2]), row[3], json.loads(row[4]), row[5], last, row[6]
        )

    def _last_generation(
        self, run_id: int, branch: int, branches: dict[int, BranchInfo]
    ) -> int | None:
        row = self._db.execute(
            "SELECT max(generation) FROM generations WHERE run_id = ? AND branch = ?",
            (run_id, branch),
        ).fetchone()
        if row[0] is not None:
            return int(row[0])
        fork = branches[branch].fork_generation
        return fork if fork >= 0 else None

    def runs(self) -> list[RunInfo]:
        """Describe every run, oldest first."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT run_id FROM runs ORDER BY run_id")]
        return [self.run_info(i) for i in ids]

    def set_status(self, run_id: int, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status = ? WHERE run_id = ?", (status, run_id))

    def set_config(self, run_id: int, config: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET config = ? WHERE run_id = ?",
                (msgspec.json.encode(config).decode(), run_id),
            )

    # -- generations -----------------------------------------------------------------------

    def record_generation(
        self, run_id: int, snapshot: Snapshot, result: GenerationResult, new_ids: tuple[int, int]
    ) -> None:
        row = generation_row(result.evolution, snapshot.branch)
        pop = snapshot.population
        g, b, t = snapshot.generation, snapshot.branch, result.evolution.timestamp
        born = AgentRecords.born(pop, b, g, self._made_from(run_id, snapshot))
        events: list[tuple[int, int, str, Any, float]] = [
            (b, g, "agent_update", a, t) for a in result.agents
        ]
        events += [(b, g, "log", e, t) for e in result.logs]
        events += [(b, g, "alert", a, t) for a in result.alerts]
        state, shared, texts = self._texts.split(run_id, snapshot.state)
        with self._tx() as db:
            if texts:
                db.executemany(
                    "INSERT OR IGNORE INTO texts (run_id, digest, text) VALUES (?, ?, ?)",
                    [(run_id, digest, text) for _, text, digest in texts],
                )
            db.execute(
                _INSERT_GENERATION, (run_id, *(row[c] for c in GENERATION_COLUMNS), *new_ids)
            )
            db.execute(
                _INSERT_SNAPSHOT,
                (
                    run_id,
                    b,
                    g,
                    len(pop),
                    *(
                        np.ascontiguousarray(getattr(pop, c), dtype=d).tobytes()
                        for c, d in _ARRAYS.items()
                    ),
                    msgspec.json.encode(state).decode(),
                    shared,
                ),
            )
            if events:
                db.executemany(
                    _INSERT_EVENT,
                    [(run_id, *tuple(event_row(0, *e).values())[1:]) for e in events],
                )
            lineage_table.insert(db, run_id, born)
        self._texts.written(run_id, texts)  # committed: only now may later rows refer to them
        self._last[run_id] = snapshot

    def _made_from(self, run_id: int, snapshot: Snapshot) -> Population | None:
        """The population ``snapshot``'s generation was made from: the last one recorded,
        except after a rollback or a reopen (then read)."""
        g = snapshot.generation
        last = self._last.get(run_id)
        if g == 0:
            return None
        if last is not None and (last.branch, last.generation) == (snapshot.branch, g - 1):
            return last.population
        try:
            return self.load_snapshot(run_id, snapshot.branch, g - 1).population
        except GenerationNotFound:
            return None

    def record_events(
        self, run_id: int, branch: int, generation: int, logs: list[LogEntry], alerts: list[Alert]
    ) -> None:
        now = time.time()
        rows = [event_row(0, branch, generation, "log", e, now) for e in logs]
        rows += [event_row(0, branch, generation, "alert", a, now) for a in alerts]
        with self._tx() as db:
            db.executemany(_INSERT_EVENT, [(run_id, *tuple(r.values())[1:]) for r in rows])

    def create_branch(self, run_id: int, parent_branch: int, fork_generation: int) -> int:
        with self._tx() as db:
            (top,) = db.execute(
                "SELECT max(branch) FROM branches WHERE run_id = ?", (run_id,)
            ).fetchone()
            if top is None:
                raise RunNotFound(f"no run {run_id} in {self.path}")
            branch = int(top) + 1
            db.execute(
                "INSERT INTO branches (run_id, branch, parent_branch, fork_generation) "
                "VALUES (?, ?, ?, ?)",
                (run_id, branch, parent_branch, fork_generation),
            )
            db.execute("UPDATE runs SET active_branch = ? WHERE run_id = ?", (branch, run_id))
        return branch

    def branches(self, run_id: int) -> list[BranchInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT branch, parent_branch, fork_generation FROM branches WHERE run_id = ? "
                "ORDER BY branch",
                (run_id,),
            ).fetchall()
        return [BranchInfo(*r) for r in rows]

    def load_snapshot(self, run_id: int, branch: int, generation: int) -> Snapshot:
        with self._lock:
            branches = {b.branch: b for b in self.branches(run_id)}
            if branch not in branches:
                raise GenerationNotFound(f"run {run_id} has no branch {branch}")
            holder = branch_holding(branches, branch, generation)
            row = None
            if holder is not None:
                row = self._db.execute(
                    f"SELECT size, {', '.join(_ARRAYS)}, state, shared FROM snapshots "
                    "WHERE run_id = ? AND branch = ? AND generation = ?",
                    (run_id, holder, generation),
                ).fetchone()
        if row is None:
            raise GenerationNotFound(
                f"generation {generation} is not in run {run_id} (branch {branch})",
                details={"generation": generation},
            )
        size = row[0]
        arrays = {
            name: np.frombuffer(blob, dtype=_ARRAYS[name]).astype(_ARRAYS[name][-2:], copy=True)
            for name, blob in zip(_ARRAYS, row[1:-2], strict=True)
        }
        arrays["genes"] = arrays["genes"].reshape(size, -1)
        state = json.loads(row[-2])
        if row[-1] is not None:
            try:
                with self._lock:
                    state = SharedTexts.join(self._db, run_id, state, row[-1])
            except KeyError as exc:
                raise StoreError(f"{self.path} is damaged: no {exc.args[0]}") from exc
        return Snapshot(generation, holder or 0, Population(**arrays), state)

    def generation_rows(self, run_id: int) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(
                f"SELECT {', '.join(GENERATION_COLUMNS)} FROM generations WHERE run_id = ? "
                "ORDER BY branch, generation",
                (run_id,),
            )
            rows = cur.fetchall()
        return [_typed(dict(zip(GENERATION_COLUMNS, r, strict=True))) for r in rows]

    def recorded_generations(
        self, run_id: int, after: int = 0, limit: int = -1
    ) -> list[dict[str, Any]]:
        """Generation rows in the order they were recorded, skipping the first ``after``.

        The position in this order (1-based) is the ``evolution`` channel's sequence number,
        so it survives restarts of a server on the same store.
        """
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(GENERATION_COLUMNS)} FROM generations WHERE run_id = ? "
                "ORDER BY rowid LIMIT ? OFFSET ?",
                (run_id, limit, after),
            ).fetchall()
        return [_typed(dict(zip(GENERATION_COLUMNS, r, strict=True))) for r in rows]

    def new_id_ranges(self, run_id: int) -> dict[tuple[int, int], tuple[int, int]]:
        """Per (branch, generation), the inclusive range of agent ids it created.

        The range holds the generation's offspring and the uploaded agents that joined it
        (numbered when they were uploaded, before the offspring), so its length minus
        ``agents_evolved`` is how many uploads joined.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT branch, generation, first_new_id, last_new_id FROM generations "
                "WHERE run_id = ?",
                (run_id,),
            ).fetchall()
        return {(int(b), int(g)): (int(lo), int(hi)) for b, g, lo, hi in rows}

    def count_generations(self, run_id: int) -> int:
        """How many generation rows the run has recorded (all branches)."""
        with self._lock:
            (count,) = self._db.execute(
                "SELECT count(*) FROM generations WHERE run_id = ?", (run_id,)
            ).fetchone()
        return int(count)

    def event_rows(self, run_id: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE run_id = ? ORDER BY seq",
                (run_id,),
            ).fetchall()
        return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]

    def id_high_water(self, run_id: int) -> tuple[int, int]:
        with self._lock:
            (agents,) = self._db.execute(
                "SELECT coalesce(max(last_new_id), 0) FROM generations WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            (alerts,) = self._db.execute(
                # alert ids are "alert-<number>"
                "SELECT coalesce(max(CAST(substr(alert_id, 7) AS INTEGER)), 0) FROM events "
                "WHERE run_id = ? AND alert_id IS NOT NULL",
                (run_id,),
            ).fetchone()
        return int(agents), int(alerts)

    def find_agent_generation(self, run_id: int, agent_id: int) -> tuple[int, int] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT branch, generation FROM generations WHERE run_id = ? AND first_new_id <= ? "
                "AND last_new_id >= ? ORDER BY first_new_id DESC LIMIT 1",
                (run_id, agent_id, agent_id),
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def _genes(self, run_id: int) -> int:
        """How many genes the run's agents have (its gene space is fixed with the run)."""
        if run_id not in self._gene_counts:
            row = self._db.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return 0
            self._gene_counts[run_id] = len(json.loads(row[0]).get("gene_space") or ())
        return self._gene_counts[run_id]

    def agent_records(self, run_id: int, agents: list[int]) -> AgentRecords:
        with self._lock:
            return lineage_table.records(self._db, run_id, agents, self._genes(run_id))

    def first_parent_line(self, run_id: int, agent: int, depth: int) -> AgentRecords:
        with self._lock:
            genes = self._genes(run_id)
            return lineage_table.first_parent_line(self._db, run_id, agent, depth, genes)

    def descendants(
        self, run_id: int, agent: int, depth: int, limit: int
    ) -> tuple[AgentRecords, np.ndarray, bool]:
        with self._lock:
            genes = self._genes(run_id)
            return lineage_table.descendants(self._db, run_id, agent, depth, limit, genes)

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    for k in _INTEGER_FIELDS:
        row[k] = int(row[k])
    return row


class _Transaction:
    """``with`` block that holds the store lock and runs one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self.db, self.lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.db.execute("COMMIT")
            else:
                self.db.execute("ROLLBACK")
        except sqlite3.DatabaseError as error:
            raise StoreError(f"run store write failed: {error}") from error
        finally:
            self.lock.release()
        if isinstance(exc, sqlite3.DatabaseError):
            raise StoreError(f"run store write failed: {exc}") from exc


_INSERT_GENERATION = (
    f"INSERT INTO generations (run_id, {', '.join(GENERATION_COLUMNS)}, first_new_id, last_new_id) "
    f"VALUES ({', '.join('?' * (len(GENERATION_COLUMNS) + 3))})"
)
_INSERT_SNAPSHOT = (
    f"INSERT INTO snapshots (run_id, branch, generation, size, {', '.join(_ARRAYS)}, state, "
    f"shared) VALUES ({', '.join('?' * (len(_ARRAYS) + 6))})"
)
_INSERT_EVENT = (
    f"INSERT INTO events (run_id, {', '.join(EVENT_COLUMNS[1:])}) "
    f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)
