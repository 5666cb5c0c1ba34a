"""Lineage from the stores (SQLite, memory) and offline from datasets, alike."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tdevlab import Engine, load_run
from tdevlab.engine.storage import AgentRecords
from tdevlab.exceptions import AgentNotFound
from tdevlab.store.lineage_table import _SEEK
from tdevlab.store.sqlite import SCHEMA_VERSION

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample-run"


def _forked_run(db: Path) -> int:
    with Engine(seed=5, population_size=25, store=db) as engine:
        list(engine.run(generations=50))
        engine.rollback(30)
        list(engine.run(generations=15))
        assert engine.run_id is not None
        return engine.run_id


def test_sqlite_and_memory_stores_answer_alike(tmp_path: Path) -> None:
    """The SQLite store (its lineage table) and the memory store (its kept snapshots) give
    the same rows, lines and descendants, cut at a limit alike."""
    stores = []
    for where in (tmp_path / "run.db", None):
        engine = Engine(seed=5, population_size=25, store=where)
        list(engine.run(generations=50))
        engine.rollback(30)
        list(engine.run(generations=15))
        stores.append(engine)
    sqlite, memory = stores
    assert sqlite.run_id is not None
    assert memory.run_id is not None
    run = sqlite.run_id

    def same(a: AgentRecords, b: AgentRecords) -> None:
        for column in AgentRecords.COLUMNS:
            np.testing.assert_array_equal(getattr(a, column), getattr(b, column), column)

    asked = [900, 3, 1200, 99999, 450, 3]
    same(sqlite.store.agent_records(run, asked), memory.store.agent_records(run, asked))
    assert sqlite.population is not None
    line = sqlite.store.first_parent_line(run, int(sqlite.population.agent_id[0]), 40)
    ancestor = int(line.agent[-1])  # many descendants
    for agent in (1200, 900, 26, ancestor):
        same(
            sqlite.store.first_parent_line(run, agent, 30),
            memory.store.first_parent_line(run, agent, 30),
        )
        for depth, limit in ((3, 10_000), (50, 40), (50, 10_000)):
            a = sqlite.store.descendants(run, agent, depth, limit)
            b = memory.store.descendants(run, agent, depth, limit)
            same(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
            assert a[2] == b[2]
    assert sqlite.store.descendants(run, ancestor, 50, 40)[2]  # cut at the limit
    for engine in stores:
        engine.close()


def _lineage_rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT * FROM lineage ORDER BY run_id, branch, generation").fetchall()


def test_schema_2_store_gets_its_lineage_table_from_the_snapshots(tmp_path: Path) -> None:
    """Opening a schema-2 store fills the lineage table with what recording wrote, so
    lineage answers the same; then runs go on writing rows."""
    db = tmp_path / "run.db"
    run_id = _forked_run(db)
    written = _lineage_rows(db)
    with Engine.open(db, run_id) as engine:
        before = engine.lineage("agent-600", descendants=True).to_dict()
    with sqlite3.connect(db) as raw:  # what a schema-2 file looks like
        raw.execute("DROP TABLE lineage")
        raw.execute("PRAGMA user_version=2")
    with Engine.open(db, run_id) as engine:
        assert engine.lineage("agent-600", descendants=True).to_dict() == before
        list(engine.run(generations=2))
    assert _lineage_rows(db)[: len(written)] == written
    assert len(_lineage_rows(db)) == len(written) + 2
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_lineage_table_keys_and_indexes(tmp_path: Path) -> None:
    """One row a generation; the row holding an agent is a seek in lineage_first_agent."""
    db = tmp_path / "run.db"
    _forked_run(db)
    with sqlite3.connect(db) as raw:
        (rows,) = raw.execute("SELECT count(*) FROM lineage").fetchone()
        (generations,) = raw.execute("SELECT count(*) FROM generations").fetchone()
        assert rows == generations
        columns = [r[2] for r in raw.execute("PRAGMA index_info(lineage_first_agent)")]
        assert columns == ["run_id", "first_agent", "last_agent"]
        plan = " ".join(str(r[3]) for r in raw.execute("EXPLAIN QUERY PLAN " + _SEEK, (1, 500)))
        assert "USING INDEX lineage_first_agent" in plan


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_dataset_rebuilds_any_lineage_offline(tmp_path: Path, fmt: str) -> None:
    """load_run(path).lineage(...) equals engine.lineage(...) for agents of every branch."""
    db = tmp_path / "run.db"
    run_id = _forked_run(db)
    with Engine.open(db, run_id) as engine:
        path = engine.export(tmp_path / "dataset", format=fmt)
        dataset = load_run(path)
        assert engine.population is not None
        agents = [int(engine.population.agent_id[0]), 700, 1000, 30]  # 1000: abandoned branch
        for agent in agents:
            for descendants in (False, True):
                expected = engine.lineage(agent, depth=40, descendants=descendants).to_dict()
                assert dataset.lineage(agent, depth=40, descendants=descendants).to_dict() == (
                    expected
                )
    with pytest.raises(AgentNotFound):
        dataset.lineage("agent-99999999")


def test_shipped_sample_run_has_lineage() -> None:
    """The shipped dataset rebuilds lineages as it is: its best agent's line reaches
    generation 0 across the rollback's fork."""
    dataset = load_run(SAMPLE)
    final = dataset.active_generations.iloc[-1]
    lineage = dataset.lineage(str(final["best_agent_id"]))
    line = [
        (g, b)
        for g, b, r in zip(
            lineage.nodes["birth_generation"],
            lineage.nodes["branch"],
            lineage.nodes["relation"],
            strict=True,
        )
        if r != "second_parent"
    ]
    assert line[-1][0] == 0
    assert {b for _, b in line} == {0, 1}
    assert lineage.nodes["agent_id"][0] == final["best_agent_id"]


def test_lineage_frames_have_dtypes(tmp_path: Path) -> None:
    """lineage_frames makes typed tables of a lineage or a lineage message's data."""
    from tdevlab.store import lineage_frames

    db = tmp_path / "run.db"
    run_id = _forked_run(db)
    with Engine.open(db, run_id) as engine:
        lineage = engine.lineage("agent-700", depth=20, descendants=True)
    nodes, edges = lineage_frames(lineage)
    assert list(nodes["agent_id"]) == lineage.nodes["agent_id"]
    assert str(nodes["made_by"].dtype) == "category"
    assert set(nodes["relation"]) == {"self", "ancestor", "second_parent", "descendant"}
    assert len(edges) == len(lineage.edges["parent"])
    again, _ = lineage_frames(lineage.to_dict())
    pd.testing.assert_frame_equal(nodes, again)
