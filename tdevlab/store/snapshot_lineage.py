"""Lineage from the SQLite store's own tables: no agent row is written per agent.

Every agent is stored once already: in the snapshot of the generation that made it (its
row there holds both parents, metrics and genes), and that generation is found by the
``generations_new_ids`` index on ``(run_id, first_new_id)`` (each generation's range of new
agent numbers). So lineage needs no table of its own, and recording a generation costs
nothing more. (A row per agent measured about 2.5 us of SQLite work per new agent: +2.5 ms
a generation at population 1000, more than the rest of the store's writing.)

* An agent's row: its generation by the index (a seek), then the snapshot's columns, read
  once per generation involved (one query per chunk of generations).
* The line of first parents: a seek and the ``agent_id`` and ``parent_a`` blobs per step,
  then the rows of the whole line at once.
* Descendants: one pass over the generations after the agent's, every branch, in order of
  generation, reading ``agent_id`` and ``parent_a``: a parent is always born before its
  child, so each generation's new agents are matched against the descendants found so far.
  The pass stops at the first generation where no descendant that may still have counted
  children is alive, or once ``limit`` descendants are found.
"""

from __future__ import annotations

import sqlite3
import struct
from typing import Any

import numpy as np

from tdevlab.engine.storage import AgentRecords, made_by_codes

__all__ = ["descendants", "first_parent_line", "records"]

_INT = struct.Struct("<q")
_FLOAT = struct.Struct("<d")
# Row values in an IN list: two variables each; SQLite allows 999 at least.
_CHUNK = 400
_BIRTH = (
    "SELECT branch, generation FROM generations WHERE run_id = ? AND first_new_id <= ? "
    "AND last_new_id >= ? ORDER BY first_new_id DESC LIMIT 1"
)


def _birth(db: sqlite3.Connection, run_id: int, agent: int) -> tuple[int, int] | None:
    row = db.execute(_BIRTH, (run_id, agent, agent)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def records(db: sqlite3.Connection, run_id: int, agents: list[int], genes: int) -> AgentRecords:
    """The stored agents among ``agents``, each once, in the order asked."""
    where: dict[tuple[int, int], list[int]] = {}
    for agent in dict.fromkeys(agents):
        birth = _birth(db, run_id, agent) if agent >= 0 else None
        if birth is not None:
            where.setdefault(birth, []).append(agent)
    found: dict[int, tuple[Any, ...]] = {}
    keys = list(where)
    for start in range(0, len(keys), _CHUNK):
        part = keys[start : start + _CHUNK]
        rows = db.execute(
            "SELECT branch, generation, agent_id, parent_a, parent_b, fitness, memory_kb, "
            "speed_us, genes FROM snapshots WHERE run_id = ? AND (branch, generation) IN "
            f"(VALUES {', '.join(['(?, ?)'] * len(part))})",
            (run_id, *(x for key in part for x in key)),
        ).fetchall()
        for branch, generation, ids, *blobs in rows:
            numbers = np.frombuffer(ids, dtype="<i8")
            for agent in where[(branch, generation)]:
                at = np.flatnonzero(numbers == agent)
                if not at.size:  # made, but not kept in its generation: not stored
                    continue
                i = int(at[0])
                # A few values of a generation's blobs: unpacked, not made arrays.
                found[agent] = (
                    branch,
                    generation,
                    *(_INT.unpack_from(blob, 8 * i)[0] for blob in blobs[:2]),
                    *(_FLOAT.unpack_from(blob, 8 * i)[0] for blob in blobs[2:5]),
                    struct.unpack_from(f"<{genes}d", blobs[5], 8 * genes * i),
                )
    order = [a for a in dict.fromkeys(agents) if a in found]
    if not order:
        return AgentRecords.empty(genes)
    cols = list(zip(*(found[a] for a in order), strict=True))
    parent_a = np.asarray(cols[2], dtype=np.int64)
    parent_b = np.asarray(cols[3], dtype=np.int64)
    born = np.asarray(cols[1], dtype=np.int64)
    return AgentRecords(
        agent=np.asarray(order, dtype=np.int64),
        branch=np.asarray(cols[0], dtype=np.int64),
        birth_generation=born,
        parent_a=parent_a,
        parent_b=parent_b,
        fitness=np.asarray(cols[4], dtype=np.float64),
        memory_kb=np.asarray(cols[5], dtype=np.float64),
        speed_us=np.asarray(cols[6], dtype=np.float64),
        made_by=made_by_codes(parent_a, parent_b, born),
        genes=np.asarray(cols[7], dtype=np.float64).reshape(len(order), genes),
    )


def first_parent_line(
    db: sqlite3.Connection, run_id: int, agent: int, depth: int, genes: int
) -> AgentRecords:
    """``agent``, its first parent, and so on: ``depth`` steps at most."""
    line: list[int] = []
    while len(line) <= depth and agent >= 0:
        birth = _birth(db, run_id, agent)
        if birth is None:
            break
        row = db.execute(
            "SELECT agent_id, parent_a FROM snapshots WHERE run_id = ? AND branch = ? "
            "AND generation = ?",
            (run_id, *birth),
        ).fetchone()
        at = np.flatnonzero(np.frombuffer(row[0], dtype="<i8") == agent)
        if not at.size:  # made, but not kept in its generation: not stored
            break
        line.append(agent)
        agent = _INT.unpack_from(row[1], 8 * int(at[0]))[0]
    return records(db, run_id, line, genes)


def descendants(
    db: sqlite3.Connection, run_id: int, agent: int, depth: int, limit: int, genes: int
) -> tuple[AgentRecords, np.ndarray, bool]:
    """The first-parent descendants of ``agent`` within ``depth`` steps.

    Returns:
        Their rows in order of birth (generation, then number), their levels (steps from
        ``agent``), and whether more than ``limit`` were found (then the first ``limit``).
    """
    birth = _birth(db, run_id, agent)
    if birth is None:
        return AgentRecords.empty(genes), np.empty(0, dtype=np.int64), False
    level: dict[int, int] = {agent: 0}
    born: dict[int, int] = {}
    current, alive, found = birth[1], True, 0
    cursor = db.execute(
        "SELECT g.generation, g.first_new_id, g.last_new_id, s.agent_id, s.parent_a "
        "FROM generations g JOIN snapshots s ON s.run_id = g.run_id AND s.branch = g.branch "
        "AND s.generation = g.generation WHERE g.run_id = ? AND g.generation > ? "
        "ORDER BY g.generation, g.branch",
        (run_id, birth[1]),
    )
    for generation, first, last, id_blob, parent_blob in cursor:
        if generation != current:  # a generation is done: stop when nothing can go on
            if not alive or found > limit:
                break
            current, alive = generation, False
        ids = np.frombuffer(id_blob, dtype="<i8")
        parents = np.frombuffer(parent_blob, dtype="<i8")
        new = np.flatnonzero((ids >= first) & (ids <= last))
        for child, parent in zip(ids[new].tolist(), parents[new].tolist(), strict=True):
            step = level.get(parent)
            if step is not None and step < depth and child not in level:
                level[child] = step + 1
                born[child] = generation
                found += 1
        alive = alive or any(level.get(a, depth) < depth for a in ids.tolist())
    cursor.close()
    order = sorted(born, key=lambda a: (born[a], a))
    table = records(db, run_id, order[:limit], genes)
    steps = np.asarray([level[a] for a in table.agent.tolist()], dtype=np.int64)
    return table, steps, len(order) > limit
