"""The agents table (schema 3) and lineage offline: migrated stores, indexes, datasets."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tdevlab import Engine, load_run
from tdevlab.exceptions import AgentNotFound
from tdevlab.store import agent_table
from tdevlab.store.sqlite import SCHEMA_VERSION, SQLiteStore

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample-run"


def _forked_run(db: Path) -> int:
    with Engine(seed=5, population_size=25, store=db) as engine:
        list(engine.run(generations=50))
        engine.rollback(30)
        list(engine.run(generations=15))
        assert engine.run_id is not None
        return engine.run_id


def _agent_rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT * FROM agents ORDER BY run_id, agent").fetchall()


def test_schema_2_store_gets_its_agents_table_from_the_snapshots(tmp_path: Path) -> None:
    """Opening a schema-2 store fills the agents table with what recording would have written,
    so lineage answers the same; then runs go on writing rows."""
    db = tmp_path / "run.db"
    run_id = _forked_run(db)
    written = _agent_rows(db)
    with SQLiteStore(db) as store:
        before = Engine.open(store, run_id).lineage("agent-600", descendants=True).to_dict()
    with sqlite3.connect(db) as raw:  # what a schema-2 file looks like
        raw.execute("DROP TABLE agents")
        raw.execute("PRAGMA user_version=2")
    with Engine.open(db, run_id) as engine:
        assert engine.lineage("agent-600", descendants=True).to_dict() == before
        list(engine.run(generations=2))
    assert _agent_rows(db)[: len(written)] == written
    assert len(_agent_rows(db)) > len(written)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


def test_agents_table_keys_and_indexes(tmp_path: Path) -> None:
    """(run_id, agent) is the primary key of a WITHOUT ROWID table; children are found by the
    (run_id, parent_a) index, and the line walk uses the key (no table scan)."""
    db = tmp_path / "run.db"
    _forked_run(db)
    with sqlite3.connect(db) as raw:
        indexes = {row[1]: row for row in raw.execute("PRAGMA index_list(agents)")}
        assert "agents_first_parent" in indexes
        columns = [r[2] for r in raw.execute("PRAGMA index_info(agents_first_parent)")]
        assert columns == ["run_id", "parent_a"]
        sql = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'agents'").fetchone()[0]
        assert "WITHOUT ROWID" in sql
        assert "PRIMARY KEY (run_id, agent)" in sql
        query = "EXPLAIN QUERY PLAN " + agent_table.children_query(2)
        plan = " ".join(str(r[3]) for r in raw.execute(query, (1, 5, 6)))
        assert "USING INDEX agents_first_parent" in plan
        plan = " ".join(
            str(r[3])
            for r in raw.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM agents WHERE run_id=1 AND agent=7"
            )
        )
        assert "PRIMARY KEY" in plan


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
    assert lineage.nodes["name"][0] == final["best_agent_name"]
