"""The memory store stays bounded on long runs."""

from __future__ import annotations

from tdevlab import Engine, MemoryStore


def test_memory_store_keeps_a_bounded_window() -> None:
    """Past keep_generations the oldest rows and events go; counts and recent rows stay right."""
    store = MemoryStore(keep_snapshots=5, keep_generations=10)
    engine = Engine(seed=1, population_size=10, store=store)
    list(engine.run(generations=25))
    run_id = engine.run_id or 0
    assert store.count_generations(run_id) == 25
    rows = store.generation_rows(run_id)
    assert [r["generation"] for r in rows] == list(range(15, 25))
    assert [r["generation"] for r in store.recorded_generations(run_id, after=20)] == list(
        range(20, 25)
    )
    assert [r["generation"] for r in store.recorded_generations(run_id, after=3, limit=2)] == [
        15,
        16,
    ]
    assert len(store.event_rows(run_id)) <= 8 * 10
    assert engine.agent(engine.step().evolution.best_agent_id).status in {"elite", "violating"}
    engine.rollback(22)
    assert engine.generation == 22
