"""pycma, Optuna and Nevergrad runs survive a SIGKILL of `tdevlab serve` on a SQLite store
exactly: the library's state comes back from the last stored generation."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tdevlab import Engine
from tdevlab.engine.strategy import make_strategy
from tdevlab.store.sqlite import SQLiteStore
from tests.server.conftest import TIMEOUT
from tests.serving import START, serve_store, watch_generations

POPULATION = 30  # what serve_store passes, on the restart too


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["cmaes", "optuna-tpe", "nevergrad:NGOpt"])
def test_sigkill_and_restart_continue_the_library_exactly(strategy: str, tmp_path: Path) -> None:
    """Killed mid-run and restarted on its store (strategy rebuilt from it, library state
    unpickled from the last generation), the run's generations equal an uninterrupted
    run's."""
    db = tmp_path / "runs.db"
    args = ("--strategy", strategy, "--seed", "5")
    with serve_store(db, "--autostart", *args) as (proc, url):
        killed_at = asyncio.run(asyncio.wait_for(watch_generations(url, 5, False), START))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    with serve_store(db) as (proc, url):
        last = asyncio.run(asyncio.wait_for(watch_generations(url, killed_at + 4, True), START))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=3 * TIMEOUT) == 0
    assert last >= killed_at + 4

    with SQLiteStore(db) as store:
        (info,) = store.runs()
        rows = store.generation_rows(info.run_id)
    assert info.config["strategy"]["name"] == strategy
    assert [r["branch"] for r in rows] == [0] * len(rows)  # one lineage, no generation twice
    reference = Engine(
        strategy=make_strategy(strategy), seed=5, population_size=POPULATION, keep_snapshots=None
    )
    for row in rows:
        expected = reference.step().evolution.to_dict()
        assert row["generation"] == expected["generation"]
        for name in ("best_fitness", "average_fitness", "best_agent_id"):
            assert row[name] == expected[name], (row["generation"], name)
