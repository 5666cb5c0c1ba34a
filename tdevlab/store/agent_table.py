"""The SQLite store's ``agents`` table: one row per agent, for lineage and agent lookups.

Every generation's new agents (those of its population born in it) are written in the
generation's own transaction: number, branch, birth generation, both parents, metrics and
how it was made. Agent numbers are unique in a run, so ``(run_id, agent)`` is the primary
key (a ``WITHOUT ROWID`` table: the row is the index entry). ``agents_first_parent`` on
``(run_id, parent_a)`` finds children; walking a line of first parents is one recursive
query over the primary key, a lookup per step. Genes are not repeated here: they are read
from the snapshot of each agent's birth generation (one read per generation involved).

Schema 3 added the table; opening a schema-2 store fills it from the stored snapshots
(:func:`backfill`), once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import numpy as np

from tdevlab.engine.population import Population
from tdevlab.engine.storage import AgentRecords

__all__ = [
    "AGENTS_SCHEMA",
    "backfill",
    "children",
    "children_query",
    "first_parent_line",
    "insert",
    "records",
]

AGENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    run_id INTEGER NOT NULL,
    agent INTEGER NOT NULL,
    branch INTEGER NOT NULL,
    birth_generation INTEGER NOT NULL,
    parent_a INTEGER NOT NULL,
    parent_b INTEGER NOT NULL,
    fitness REAL NOT NULL,
    memory_kb REAL NOT NULL,
    speed_us REAL NOT NULL,
    made_by INTEGER NOT NULL,
    PRIMARY KEY (run_id, agent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS agents_first_parent ON agents(run_id, parent_a);
"""

_COLUMNS = (
    "agent, branch, birth_generation, parent_a, parent_b, fitness, memory_kb, speed_us, made_by"
)
_INSERT = f"INSERT OR IGNORE INTO agents (run_id, {_COLUMNS}) VALUES ({', '.join('?' * 10)})"
# SQLite binds at most 32766 variables a statement (999 before 3.32): chunk IN lists.
_CHUNK = 900


def insert(db: sqlite3.Connection, run_id: int, born: AgentRecords) -> None:
    """Write the rows of ``born`` (inside the caller's transaction)."""
    if not len(born):
        return
    db.executemany(
        _INSERT,
        zip(
            [run_id] * len(born),
            born.agent.tolist(),
            born.branch.tolist(),
            born.birth_generation.tolist(),
            born.parent_a.tolist(),
            born.parent_b.tolist(),
            born.fitness.tolist(),
            born.memory_kb.tolist(),
            born.speed_us.tolist(),
            born.made_by.tolist(),
            strict=True,
        ),
    )


def _table(
    db: sqlite3.Connection, run_id: int, rows: Iterable[tuple[object, ...]], genes: int
) -> AgentRecords:
    """Rows of ``agents`` as a table, with their genes from the birth snapshots."""
    rows = list(rows)
    if not rows:
        return AgentRecords.empty(genes)
    cols = list(zip(*rows, strict=True))
    table = AgentRecords(
        agent=np.asarray(cols[0], dtype=np.int64),
        branch=np.asarray(cols[1], dtype=np.int64),
        birth_generation=np.asarray(cols[2], dtype=np.int64),
        parent_a=np.asarray(cols[3], dtype=np.int64),
        parent_b=np.asarray(cols[4], dtype=np.int64),
        fitness=np.asarray(cols[5], dtype=np.float64),
        memory_kb=np.asarray(cols[6], dtype=np.float64),
        speed_us=np.asarray(cols[7], dtype=np.float64),
        made_by=np.asarray(cols[8], dtype=np.int64),
        genes=np.empty((len(rows), genes)),
    )
    where: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(cols[1], cols[2], strict=True)):
        where.setdefault(key, []).append(i)
    keys = list(where)
    for start in range(0, len(keys), _CHUNK // 2):  # one query per chunk of generations
        part = keys[start : start + _CHUNK // 2]
        found = db.execute(
            "SELECT branch, generation, agent_id, genes FROM snapshots WHERE run_id = ? AND "
            f"(branch, generation) IN (VALUES {', '.join(['(?, ?)'] * len(part))})",
            (run_id, *(x for key in part for x in key)),
        ).fetchall()
        for branch, generation, ids, blob in found:
            numbers = np.frombuffer(ids, dtype="<i8")
            matrix = np.frombuffer(blob, dtype="<f8").reshape(numbers.size, -1)
            for i in where[(branch, generation)]:
                table.genes[i] = matrix[int(np.flatnonzero(numbers == table.agent[i])[0])]
    return table


def records(db: sqlite3.Connection, run_id: int, agents: list[int], genes: int) -> AgentRecords:
    """The rows of ``agents`` that exist."""
    rows: list[tuple[object, ...]] = []
    unique = sorted(set(agents))
    for i in range(0, len(unique), _CHUNK):
        part = unique[i : i + _CHUNK]
        rows += db.execute(
            f"SELECT {_COLUMNS} FROM agents WHERE run_id = ? AND agent IN "
            f"({', '.join('?' * len(part))})",
            (run_id, *part),
        ).fetchall()
    return _table(db, run_id, rows, genes)


_LINE = f"""
WITH RECURSIVE line(agent, step) AS (
    SELECT ?, 0
    UNION ALL
    SELECT a.parent_a, line.step + 1 FROM line
    JOIN agents a ON a.run_id = ? AND a.agent = line.agent
    WHERE line.step < ? AND a.parent_a >= 0
)
SELECT {", ".join("a." + c.strip() for c in _COLUMNS.split(","))}
FROM line JOIN agents a ON a.run_id = ? AND a.agent = line.agent
ORDER BY line.step
"""


def first_parent_line(
    db: sqlite3.Connection, run_id: int, agent: int, depth: int, genes: int
) -> AgentRecords:
    """``agent``, its first parent, and so on: one recursive query, a key lookup a step."""
    return _table(db, run_id, db.execute(_LINE, (agent, run_id, depth, run_id)).fetchall(), genes)


def children_query(count: int) -> str:
    """The query for the children of ``count`` agents (parameters: run id, then them).

    ``INDEXED BY``: without statistics SQLite would rather scan the run's rows by key.
    """
    return (
        f"SELECT {_COLUMNS} FROM agents INDEXED BY agents_first_parent WHERE run_id = ? "
        f"AND parent_a IN ({', '.join('?' * count)}) ORDER BY agent"
    )


def children(db: sqlite3.Connection, run_id: int, agents: list[int], genes: int) -> AgentRecords:
    """The agents whose first parent is one of ``agents`` (by ``agents_first_parent``)."""
    rows: list[tuple[object, ...]] = []
    unique = sorted(set(agents))
    for i in range(0, len(unique), _CHUNK):
        part = unique[i : i + _CHUNK]
        rows += db.execute(children_query(len(part)), (run_id, *part)).fetchall()
    return _table(db, run_id, rows, genes)


def backfill(db: sqlite3.Connection, arrays: dict[str, str]) -> None:
    """Fill ``agents`` from every stored snapshot (the schema 2 -> 3 migration).

    A generation's new agents are the rows of its snapshot born in it.
    """
    cursor = db.execute(
        f"SELECT run_id, branch, generation, size, {', '.join(arrays)} FROM snapshots "
        "ORDER BY run_id, branch, generation"
    )
    for row in cursor:
        run_id, branch, generation, size = row[:4]
        columns = {
            name: np.frombuffer(blob, dtype=arrays[name]).astype(arrays[name][-2:])
            for name, blob in zip(arrays, row[4:], strict=True)
        }
        columns["genes"] = columns["genes"].reshape(size, -1)
        population = Population(**columns)
        insert(db, run_id, AgentRecords.born(population, branch, generation))
