"""MAP-Elites' incremental paths give what the whole-archive computations give.

A tell sorts only the offspring and meets each cell's best with the elite there
(``_archive_update``); who entered and left the archive follows from the tell's selection
(``strategy_outcome`` with ``keep``); the next population is gathered without concatenating
the archive and the offspring (``_take``); the archive's cells are the last tell's
(``_cells_of_archive``); a snapshot names an archive's members as the whole population.
Each is checked here against the computation it replaces, on many random cases with ties,
infeasible agents and negative zeros, or on whole runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tdevlab import Engine
from tdevlab.engine import generation as gen
from tdevlab.engine.map_elites import MapElites, _archive_update, _cell_winners
from tests.engine.test_multi_strategies import _map_elites, _nsga2


def _columns(rng: np.random.Generator, size: int, cells: int) -> gen.FloatArray:
    cell = rng.integers(0, cells, size)
    fitness = rng.integers(-3, 3, size).astype(np.float64)  # small integers: many ties
    fitness[rng.random(size) < 0.1] = -0.0
    violation = np.where(rng.random(size) < 0.3, rng.integers(0, 3, size), 0).astype(np.float64)
    return np.stack([cell.astype(np.float64), fitness, violation])


def test_archive_update_is_the_stable_sort_of_archive_and_offspring() -> None:
    """Per cell the winner is the one a stable sort of archive then offspring puts first:
    feasible, smaller violation, higher fitness, then older (2,000 random cases)."""
    rng = np.random.default_rng(0)
    for case in range(2000):
        cells = int(rng.integers(1, 30))
        old = _columns(rng, int(rng.integers(0, 40)), cells)
        # An archive as a tell leaves it: one row per cell, in cell order.
        winners = _cell_winners(old[0].astype(np.int64), old[1], old[2])
        cell, fitness, violation = (
            old[0][winners].astype(np.int64),
            old[1][winners],
            old[2][winners],
        )
        new = _columns(rng, int(rng.integers(1, 40)), cells)
        new_cell = new[0].astype(np.int64)
        whole = _cell_winners(
            np.concatenate([cell, new_cell]),
            np.concatenate([fitness, new[1]]),
            np.concatenate([violation, new[2]]),
        )
        got = _archive_update((cell, fitness, violation), (new_cell, new[1], new[2]))
        assert np.array_equal(got, whole), case


def test_archive_update_sorts_everything_when_cells_repeat() -> None:
    """An archive whose cells are not one per cell in order (limits changed the grid) is
    sorted whole."""
    cell = np.array([3, 1, 1], dtype=np.int64)
    fitness = np.array([1.0, 2.0, 5.0])
    zeros = np.zeros(3)
    new = (np.array([1, 0], dtype=np.int64), np.array([4.0, 0.0]), np.zeros(2))
    got = _archive_update((cell, fitness, zeros), new)
    assert (
        got.tolist()
        == _cell_winners(np.r_[cell, new[0]], np.r_[fitness, new[1]], np.r_[zeros, new[2]]).tolist()
    )
    assert got.tolist() == [4, 2, 0]


def test_take_gathers_as_concatenation_would() -> None:
    """Rows of previous then offspring, in any order a tell selects."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, k = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        previous, new = rng.random((n, 3)), rng.random((k, 3))
        keep = rng.choice(n + k, int(rng.integers(1, n + k + 1)), replace=False)
        expected = np.concatenate([previous, new])[keep]
        assert np.array_equal(gen._take(previous, new, keep, -1), expected)
        assert np.array_equal(gen._take(previous[:, 0], new[:, 0], keep, -1), expected[:, 0])


def test_archive_changes_from_the_selection_are_the_set_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Who entered and left an archive, read from the tell's selection, is what comparing
    the member sets gives: the same updates in the same order, every generation."""
    engine = _map_elites()  # the archive runs of the strategies' own tests
    original = gen.strategy_outcome
    pairs: list[tuple[Any, Any]] = []
    selections = 0

    def both(**kwargs: Any) -> Any:
        nonlocal selections
        previous = kwargs["previous"]
        if previous is not None and np.array_equal(kwargs["previous_members"], previous.agent_id):
            selections += 1  # the members were the whole archive: the selection path
        fast = original(**kwargs)
        kwargs.pop("keep")
        pairs.append((fast, original(**kwargs)))
        return fast

    monkeypatch.setattr(gen, "strategy_outcome", both)
    for _ in range(25):
        engine.step()
    assert selections == 24
    changes = 0
    for fast, slow in pairs:
        assert fast[0] == slow[0]
        assert fast[1] == slow[1]
        assert np.array_equal(fast[2], slow[2])
        changes += len(fast[1])
    assert changes > 100  # entering and leaving agents were compared, not empty lists


def test_tell_places_only_the_offspring_while_the_archive_is_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The archive's cells come from the last tell when it made these very rows under the
    same grid, and are then what placing every row gives; after a rollback (another
    archive) they are placed again."""
    engine = _map_elites()
    strategy = engine.strategy
    assert isinstance(strategy, MapElites)
    original = MapElites._cells_of_archive
    reused: list[bool] = []

    def checked(self: MapElites, values: Any, bounds: Any, p: Any) -> Any:
        made = self._archive_cells
        cells = original(self, values, bounds, p)
        reused.append(made is not None and cells is made[2])
        assert np.array_equal(cells, self.cell_of(values, p))
        return cells

    monkeypatch.setattr(MapElites, "_cells_of_archive", checked)
    for _ in range(12):
        engine.step()
    assert reused == [True] * 11
    engine.rollback(5)
    engine.step()
    assert reused[-1] is False  # the cached cells were generation 12's archive
    engine.step()
    assert reused[-1] is True


def _archive_events(engine: Engine) -> list[Any]:
    result = engine.step()
    return [(a.agent_id, a.status, a.reason) for a in result.agents]


def test_an_archives_members_are_stored_as_the_population(tmp_path: Path) -> None:
    """A snapshot names an archive's members as the whole population instead of listing
    thousands of numbers; a reopened run announces the same archive changes as the
    uninterrupted one, and a front (a subset) is still listed."""
    reference = _map_elites()
    for _ in range(8):
        reference.step()
    expected = [_archive_events(reference) for _ in range(3)]
    engine = _map_elites(store=tmp_path / "runs.db")
    for _ in range(8):
        engine.step()
    state = engine.store.load_snapshot(engine.run_id, 0, engine.generation).state
    assert state["members"] == gen.WHOLE_POPULATION
    run_id = engine.run_id
    engine.close()
    assert run_id is not None
    reopened = Engine.open(tmp_path / "runs.db", run_id)
    assert [_archive_events(reopened) for _ in range(3)] == expected
    reopened.close()
    front = _nsga2()
    for _ in range(3):
        front.step()
    members = front.store.load_snapshot(front.run_id, 0, front.generation).state["members"]
    assert isinstance(members, list)
    assert 0 < len(members) <= 24


def test_members_listed_by_number_are_restored_too() -> None:
    """Snapshots written before the whole-population form list the numbers: both forms
    restore the same member set."""
    engine = _map_elites()
    for _ in range(3):
        engine.step()
    pop = engine.population
    assert pop is not None
    listed = gen.restored_members(pop.agent_id.tolist(), pop)
    assert np.array_equal(listed, gen.restored_members(gen.WHOLE_POPULATION, pop))
    assert gen.stored_members(None, pop) is None
    assert gen.restored_members(None, pop).size == 0
