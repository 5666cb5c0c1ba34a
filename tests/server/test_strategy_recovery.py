"""NSGA-II and MAP-Elites runs survive a SIGKILL of `tdevlab serve` on a SQLite store exactly."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tdevlab import Engine
from tdevlab.engine.strategy import make_strategy
from tdevlab.store.sqlite import SQLiteStore
from tests.conftest import run, timeout
from tests.serving import TIMEOUT, serve_store, watch_generations


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["nsga2", "map-elites"])
def test_sigkill_and_resume_continues_the_strategy_exactly(strategy: str, tmp_path: Path) -> None:
    """Killed mid-run and restarted on its store (strategy rebuilt from it), the run's
    generations equal an uninterrupted run's, measures included."""
    db = tmp_path / "runs.db"
    args = ("--strategy", strategy, "--seed", "5")
    with serve_store(db, "--autostart", *args) as (proc, url):
        killed_at = run(watch_generations(url, 8, False))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    with serve_store(db) as (proc, url):
        last = run(watch_generations(url, killed_at + 6, True))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=timeout(30)) == 0
    assert last >= killed_at + 6

    with SQLiteStore(db) as store:
        (info,) = store.runs()
        rows = store.generation_rows(info.run_id)
    assert info.config["strategy"]["name"] == strategy
    assert [r["branch"] for r in rows] == [0] * len(rows)  # one lineage, no generation twice
    reference = Engine(
        strategy=make_strategy(strategy), seed=5, population_size=30, keep_snapshots=None
    )
    fields = ("best_fitness", "average_fitness", "front_size", "hypervolume",
              "archive_coverage", "qd_score", "best_agent_id")  # fmt: skip
    for row in rows:
        expected: dict[str, Any] = reference.step().evolution.to_dict()
        assert row["generation"] == expected["generation"]
        for name in fields:
            assert row[name] == expected.get(name), (row["generation"], name)
