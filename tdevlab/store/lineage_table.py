"""The SQLite store's ``lineage`` table: each generation's new agents, one row a generation.

A generation's new agents (the rows of its population born in it) are written in the
generation's own transaction as one row of column blobs: their numbers, both parents,
metrics, how each was made and which genes differ from its first parent (bits, computed
against the population it was made from). One row a generation, not one an agent: a row
per agent measured ~2.5 us of SQLite work per new agent (+2.5 ms a generation at
population 1000, more than the rest of the store's writing); this costs one insert.

Indexes: the primary key ``(run_id, branch, generation)``, and ``lineage_first_agent`` on
``(run_id, first_agent, last_agent)`` (the smallest and largest numbers in the row): agent
numbers only grow, so the row holding agent ``n`` is the one with the largest
``first_agent <= n``, one seek (should ranges ever overlap, the rows whose range holds
``n`` are read on down the index until one has it). A line of first parents is a seek and
one small row per step; descendants are one pass over the rows of the later generations
(every branch) in order of generation, matching each generation's new agents against the
descendants found so far (a parent is always born before its child).

Schema 3 added the table; opening a schema-2 store fills it from the stored snapshots,
once (:func:`backfill`).
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from tdevlab.engine.population import Population
from tdevlab.engine.storage import AgentRecords

__all__ = ["LINEAGE_SCHEMA", "backfill", "descendants", "first_parent_line", "insert", "records"]

LINEAGE_SCHEMA = """
CREATE TABLE IF NOT EXISTS lineage (
    run_id INTEGER NOT NULL,
    branch INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    first_agent INTEGER NOT NULL,
    last_agent INTEGER NOT NULL,
    agent BLOB NOT NULL,
    parent_a BLOB NOT NULL,
    parent_b BLOB NOT NULL,
    fitness BLOB NOT NULL,
    memory_kb BLOB NOT NULL,
    speed_us BLOB NOT NULL,
    made_by BLOB NOT NULL,
    changed BLOB NOT NULL,
    known BLOB NOT NULL,
    PRIMARY KEY (run_id, branch, generation)
);
CREATE INDEX IF NOT EXISTS lineage_first_agent ON lineage(run_id, first_agent, last_agent);
"""

# The blobs and their dtypes (little-endian: files move machines); `changed` is packed bits.
_BLOBS: dict[str, str] = {
    "agent": "<i8",
    "parent_a": "<i8",
    "parent_b": "<i8",
    "fitness": "<f8",
    "memory_kb": "<f8",
    "speed_us": "<f8",
    "made_by": "i1",
    "changed": "u1",
    "known": "u1",
}
_INSERT = (
    f"INSERT OR REPLACE INTO lineage (run_id, branch, generation, first_agent, last_agent, "
    f"{', '.join(_BLOBS)}) VALUES ({', '.join('?' * (len(_BLOBS) + 5))})"
)
_SEEK = (
    f"SELECT branch, generation, {', '.join(_BLOBS)} FROM lineage "
    "WHERE run_id = ? AND first_agent <= ?2 AND last_agent >= ?2 ORDER BY first_agent DESC"
)

#: A generation's row as read: (branch, generation) and its decoded records.
Block = tuple[tuple[int, int], AgentRecords]


def insert(db: sqlite3.Connection, run_id: int, born: AgentRecords) -> None:
    """Write one generation's new agents as a row (inside the caller's transaction)."""
    if not len(born):
        return
    blobs = [
        np.ascontiguousarray(getattr(born, name), dtype=dtype).tobytes()
        for name, dtype in _BLOBS.items()
        if name != "changed"
    ]
    changed = np.packbits(born.changed, axis=1).tobytes()
    blobs.insert(list(_BLOBS).index("changed"), changed)
    key = (
        int(born.branch[0]),
        int(born.birth_generation[0]),
        int(born.agent.min()),
        int(born.agent.max()),
    )
    db.execute(_INSERT, (run_id, *key, *blobs))


def _decode(row: tuple[Any, ...], genes: int) -> Block:
    branch, generation, *blobs = row
    cols = {
        name: np.frombuffer(blob, dtype=dtype)
        for (name, dtype), blob in zip(_BLOBS.items(), blobs, strict=True)
    }
    n = cols["agent"].size
    changed = np.unpackbits(cols["changed"].reshape(n, -1), axis=1, count=genes).astype(bool)
    records = AgentRecords(
        agent=cols["agent"].astype(np.int64),
        branch=np.full(n, branch, dtype=np.int64),
        birth_generation=np.full(n, generation, dtype=np.int64),
        parent_a=cols["parent_a"].astype(np.int64),
        parent_b=cols["parent_b"].astype(np.int64),
        fitness=cols["fitness"].astype(np.float64),
        memory_kb=cols["memory_kb"].astype(np.float64),
        speed_us=cols["speed_us"].astype(np.float64),
        made_by=cols["made_by"].astype(np.int64),
        changed=changed,
        known=cols["known"].astype(bool),
    )
    return (int(branch), int(generation)), records


_INT = struct.Struct("<q")
_FLOAT = struct.Struct("<d")


def _position(numbers: bytes, agent: int) -> int:
    """The index of ``agent`` in a blob of little-endian int64 numbers (-1: absent)."""
    needle = _INT.pack(agent)
    at = numbers.find(needle)
    while at >= 0 and at % 8:  # a match across two numbers
        at = numbers.find(needle, at + 1)
    return -1 if at < 0 else at // 8


class _Reader:
    """Finds agents' rows: a seek, then only the agent's values unpacked from the blobs."""

    def __init__(self, db: sqlite3.Connection, run_id: int, genes: int) -> None:
        self.db, self.run_id, self.genes = db, run_id, genes
        self.width = (genes + 7) // 8  # bytes of changed bits per agent

    def find(self, agent: int) -> tuple[Any, ...] | None:
        """``agent``'s values (in :data:`AgentRecords.COLUMNS` order), or ``None``."""
        if agent < 0:
            return None
        row = self.db.execute(_SEEK + " LIMIT 1", (self.run_id, agent)).fetchone()
        i = -1 if row is None else _position(row[2], agent)
        if row is not None and i < 0:  # ranges overlap: the other rows whose range holds it
            for row in self.db.execute(_SEEK, (self.run_id, agent)).fetchall()[1:]:
                i = _position(row[2], agent)
                if i >= 0:
                    break
        if row is None or i < 0:
            return None
        branch, generation, _, parent_a, parent_b, fit, mem, speed, made, bits, known = row
        w = self.width
        return (
            agent,
            branch,
            generation,
            _INT.unpack_from(parent_a, 8 * i)[0],
            _INT.unpack_from(parent_b, 8 * i)[0],
            _FLOAT.unpack_from(fit, 8 * i)[0],
            _FLOAT.unpack_from(mem, 8 * i)[0],
            _FLOAT.unpack_from(speed, 8 * i)[0],
            made[i],
            bits[w * i : w * (i + 1)],
            known[i],
        )

    def table(self, values: list[tuple[Any, ...]]) -> AgentRecords:
        """Records of values from :meth:`find`."""
        if not values:
            return AgentRecords.empty(self.genes)
        cols = list(zip(*values, strict=True))
        bits = np.frombuffer(b"".join(cols[9]), dtype=np.uint8).reshape(len(values), self.width)
        return AgentRecords(
            agent=np.asarray(cols[0], dtype=np.int64),
            branch=np.asarray(cols[1], dtype=np.int64),
            birth_generation=np.asarray(cols[2], dtype=np.int64),
            parent_a=np.asarray(cols[3], dtype=np.int64),
            parent_b=np.asarray(cols[4], dtype=np.int64),
            fitness=np.asarray(cols[5], dtype=np.float64),
            memory_kb=np.asarray(cols[6], dtype=np.float64),
            speed_us=np.asarray(cols[7], dtype=np.float64),
            made_by=np.asarray(cols[8], dtype=np.int64),
            changed=np.unpackbits(bits, axis=1, count=self.genes).astype(bool),
            known=np.asarray(cols[10], dtype=bool),
        )


def records(db: sqlite3.Connection, run_id: int, agents: list[int], genes: int) -> AgentRecords:
    """The stored agents among ``agents``, each once, in the order asked."""
    reader = _Reader(db, run_id, genes)
    found = [reader.find(a) for a in dict.fromkeys(agents)]
    return reader.table([f for f in found if f is not None])


def first_parent_line(
    db: sqlite3.Connection, run_id: int, agent: int, depth: int, genes: int
) -> AgentRecords:
    """``agent``, its first parent, and so on: ``depth`` steps at most."""
    reader = _Reader(db, run_id, genes)
    line: list[tuple[Any, ...]] = []
    while len(line) <= depth:
        found = reader.find(agent)
        if found is None:
            break
        line.append(found)
        agent = found[3]
    return reader.table(line)


def descendants(
    db: sqlite3.Connection, run_id: int, agent: int, depth: int, limit: int, genes: int
) -> tuple[AgentRecords, np.ndarray, bool]:
    """The first-parent descendants of ``agent`` within ``depth`` steps.

    Returns:
        Their rows in order of birth (generation, then number), their levels (steps from
        ``agent``), and whether more than ``limit`` were found (then the first ``limit``).
    """
    start = _Reader(db, run_id, genes).find(agent)
    if start is None:
        return AgentRecords.empty(genes), np.empty(0, dtype=np.int64), False
    level: dict[int, int] = {agent: 0}
    parts: list[AgentRecords] = []
    steps: list[int] = []
    found, current = 0, int(start[2])
    cursor = db.execute(  # the first two blobs only: a row's start, most rows have no hit
        "SELECT branch, generation, agent, parent_a FROM lineage WHERE run_id = ? "
        "AND generation > ? ORDER BY generation, branch",
        (run_id, current),
    )
    for branch, generation, number_blob, parent_blob in cursor:
        if generation != current:  # a generation is done: enough found?
            if found > limit:
                break
            current = generation
        numbers = np.frombuffer(number_blob, dtype="<i8").tolist()
        hits = [
            (i, level[p] + 1)
            for i, p in enumerate(np.frombuffer(parent_blob, dtype="<i8").tolist())
            if level.get(p, depth) < depth and numbers[i] not in level
        ]
        if not hits:
            continue
        row = db.execute(
            f"SELECT branch, generation, {', '.join(_BLOBS)} FROM lineage WHERE run_id = ? "
            "AND branch = ? AND generation = ?",
            (run_id, branch, generation),
        ).fetchone()
        block = _decode(row, genes)[1]
        for i, step in hits:
            level[numbers[i]] = step
        parts.append(block.take(np.asarray([i for i, _ in hits], dtype=np.int64)))
        steps += [step for _, step in hits]
        found += len(hits)
    cursor.close()
    table = AgentRecords.concat(parts, genes)
    order = np.lexsort((table.agent, table.birth_generation))[:limit]
    return table.take(order), np.asarray(steps, dtype=np.int64)[order], found > limit


def backfill(
    db: sqlite3.Connection,
    load: Callable[[int, int, int], Population | None],
) -> None:
    """Fill ``lineage`` from the stored snapshots (the schema 2 -> 3 migration).

    Args:
        db: The connection, inside the migration's transaction.
        load: ``load(run_id, branch, generation)``: the population of a generation as seen
            from ``branch`` (``None`` if there is none), for the parents of the next one.
    """
    keys = db.execute(
        "SELECT run_id, branch, generation FROM snapshots ORDER BY run_id, branch, generation"
    ).fetchall()
    last: tuple[tuple[int, int, int], Population | None] | None = None
    for run_id, branch, generation in keys:
        if last is not None and last[0] == (run_id, branch, generation - 1):
            previous = last[1]  # the usual case: the row before, on the same branch
        else:
            previous = load(run_id, branch, generation - 1) if generation > 0 else None
        population = load(run_id, branch, generation)
        if population is not None:
            insert(db, run_id, AgentRecords.born(population, branch, generation, previous))
        last = ((run_id, branch, generation), population)
