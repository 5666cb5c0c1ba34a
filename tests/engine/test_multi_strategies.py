"""NSGA-II and MAP-Elites through the engine: fronts, archives, exact rollback, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tdevlab import Engine, load_run
from tdevlab.engine import NSGA2, ZDT1, AgentDesign, MapElites, ProjectedRastrigin
from tdevlab.engine.pareto import hypervolume, non_dominated_ranks
from tdevlab.engine.strategy import Offspring, make_strategy
from tdevlab.exceptions import InvalidCommand, InvalidParameters, InvalidState
from tests.serving import client, make_server

FREE = {"memory_limit_kb": 1e9, "speed_limit_us": 1e9}


def _nsga2(**kwargs: Any) -> Engine:
    return Engine(
        ZDT1(dims=8),
        strategy=NSGA2(objectives=["memory_kb", "speed_us"]),
        seed=3,
        population_size=24,
        crossover_rate=0.9,
        mutation_rate=1 / 8,
        elite_count=0,
        **FREE,
        **kwargs,
    )


def _map_elites(**kwargs: Any) -> Engine:
    return Engine(
        ProjectedRastrigin(dims=6),
        strategy=MapElites(bins=(8, 8), ranges=[(-15.36, 15.36)] * 2),
        seed=4,
        population_size=30,
        mutation_rate=1.0,
        mutation_sigma=0.05,
        elite_count=0,
        **FREE,
        **kwargs,
    )


def _state(engine: Engine) -> tuple[Any, ...]:
    pop = engine.population
    assert pop is not None
    return (engine.generation, pop.genes.tobytes(), pop.fitness.tobytes(), pop.memory_kb.tobytes())


def test_nsga2_improves_the_front_and_keeps_the_population_size() -> None:
    """Hypervolume grows; survivors are sorted by fronts; the size stays population_size."""
    engine = _nsga2()
    engine.step()
    ref = np.array([1.1, 10.0])

    def hv() -> float:
        pop = engine.population
        assert pop is not None
        return hypervolume(np.column_stack([pop.memory_kb, pop.speed_us]), ref)

    first = hv()
    for _ in range(40):
        engine.step()
    assert hv() > first
    pop = engine.population
    assert pop is not None
    assert len(pop) == 24
    ranks = non_dominated_ranks(np.column_stack([pop.memory_kb, pop.speed_us]))
    assert (ranks == 0).sum() >= 2


def test_nsga2_constrained_domination_prefers_feasible_agents() -> None:
    """With the run's limits, feasible agents survive before any infeasible one."""
    engine = Engine(AgentDesign(), strategy=NSGA2(), seed=2, population_size=30)
    for _ in range(15):
        engine.step()
    pop = engine.population
    assert pop is not None
    feasible = pop.violation == 0
    assert feasible.any()
    assert feasible.mean() > 0.5


def test_map_elites_archive_has_one_best_agent_per_cell() -> None:
    """The population is the archive: distinct cells, coverage grows, elites never lost."""
    engine = _map_elites()
    strategy = engine.strategy
    assert isinstance(strategy, MapElites)
    coverage = []
    best_per_cell: dict[int, float] = {}
    for _ in range(25):
        engine.step()
        pop = engine.population
        assert pop is not None
        cells = strategy.cell_of(np.column_stack([pop.memory_kb, pop.speed_us]), engine.params)
        assert len(np.unique(cells)) == len(cells)
        now = dict(zip(cells.tolist(), pop.fitness.tolist(), strict=True))
        for cell, fitness in best_per_cell.items():
            assert now[cell] >= fitness  # an elite is only ever replaced by a better one
        best_per_cell = now
        coverage.append(len(pop))
    assert coverage[-1] > coverage[0]


@pytest.mark.parametrize("make", [_nsga2, _map_elites], ids=["nsga2", "map-elites"])
def test_rollback_mid_run_replays_the_same_fronts_and_archives(make: Any) -> None:
    """Roll back and continue: the same generations (genes, fitness, outputs) bit for bit."""
    engine = make()
    original = []
    for _ in range(14):
        engine.step()
        original.append(_state(engine))
    engine.rollback(6)
    replay = []
    for _ in range(7):
        engine.step()
        replay.append(_state(engine))
    assert replay == original[7:]


@pytest.mark.parametrize("make", [_nsga2, _map_elites], ids=["nsga2", "map-elites"])
def test_reopened_sqlite_run_continues_exactly(make: Any, tmp_path: Path) -> None:
    """A run reopened from its SQLite store (strategy rebuilt from the store) continues as
    the uninterrupted run does."""
    reference = make()
    for _ in range(12):
        reference.step()
    engine = make(store=tmp_path / "runs.db")
    for _ in range(6):
        engine.step()
    run_id = engine.run_id
    engine.close()
    assert run_id is not None
    reopened = Engine.open(tmp_path / "runs.db", run_id)  # strategy from the store
    assert reopened.strategy.name == engine.strategy.name
    for _ in range(6):
        reopened.step()
    assert _state(reopened) == _state(reference)
    reopened.close()


@pytest.mark.parametrize(
    ("strategy", "named"),
    [
        (lambda: NSGA2(objectives=["fitness", "latency"]), "unknown objective(s) ['latency']"),
        (lambda: NSGA2(objectives=["sideways:fitness"]), "direction 'sideways'"),
        (lambda: MapElites(descriptors=("memory_kb", "colour")), "['colour']"),
        (lambda: MapElites(descriptors=("memory_kb", "temperature")), "need ranges="),
        (lambda: MapElites(bins=(0, 5)), "bins=[0, 5]"),
        (lambda: MapElites(ranges=[(1, 1), (0, 2)]), "low < high"),
        (lambda: MapElites(emitter="cma"), "emitter='cma'"),
    ],
)
def test_bad_strategy_settings_are_named(strategy: Any, named: str) -> None:
    """Unknown objectives or descriptors, bad bins, ranges or emitters: named, no run made."""
    with pytest.raises(InvalidParameters) as info:
        Engine(AgentDesign(), strategy=strategy(), seed=1)
    assert named in str(info.value)


def test_strategies_rebuild_from_their_config() -> None:
    """make_strategy(name, config) rebuilds each built-in strategy from its stored config."""
    for strategy in (NSGA2(objectives=["max:fitness", "min:memory_kb"]), MapElites(bins=(4, 5))):
        rebuilt = make_strategy(strategy.name, strategy.config)
        assert rebuilt.config == strategy.config  # type: ignore[attr-defined]


def test_nsga2_reports_its_front_live_and_in_the_dataset(tmp_path: Path) -> None:
    """evolution_update carries front_size and hypervolume (a fixed reference point); agents
    entering and leaving the front are agent_updates; the dataset has the columns."""
    engine = _nsga2(store=tmp_path / "runs.db")
    results = [engine.step()]
    reference = list(engine._strategy_state["reference"])  # set from generation 0
    results += [engine.step() for _ in range(24)]
    updates = [r.evolution for r in results]
    assert all(u.front_size is not None and u.front_size >= 1 for u in updates)
    assert updates[-1].hypervolume is not None
    assert updates[0].hypervolume is not None
    assert updates[-1].hypervolume > updates[0].hypervolume
    assert engine._strategy_state["reference"] == reference  # fixed for the run
    reasons = {a.reason for r in results for a in r.agents}
    assert {"front", "left_front"} <= reasons
    wire = updates[-1].to_dict()
    assert {"front_size", "hypervolume"} <= set(wire)
    assert "qd_score" not in wire
    data = load_run(engine.export(tmp_path / "ds"))
    assert data.generations["front_size"].tolist() == [u.front_size for u in updates]
    assert data.generations["hypervolume"].tolist() == pytest.approx(
        [u.hypervolume for u in updates]
    )
    engine.close()


def test_map_elites_reports_coverage_qd_score_and_archive_changes() -> None:
    """archive_coverage is the share of cells filled, qd_score the elites above the offset;
    new elites are agent_updates with reason archive, replaced ones left_archive (retired)."""
    engine = _map_elites()
    results = [engine.step() for _ in range(15)]
    strategy = engine.strategy
    assert isinstance(strategy, MapElites)
    last = results[-1].evolution
    pop = engine.population
    assert pop is not None
    assert last.archive_coverage == len(pop) / strategy.cells
    offset = engine._strategy_state["qd_offset"]
    assert last.qd_score == pytest.approx(float(np.maximum(pop.fitness - offset, 0).sum()))
    assert [r.evolution.qd_score for r in results] == sorted(
        r.evolution.qd_score for r in results
    )  # elites are only ever replaced by better ones: the QD score never drops
    left = [a for r in results for a in r.agents if a.reason == "left_archive"]
    assert left
    assert all(a.status == "retired" for a in left)
    entered = {a.agent_id for a in results[-1].agents if a.reason == "archive"}
    assert entered <= {f"agent-{i}" for i in pop.agent_id}


def test_strategy_is_chosen_with_start_and_recorded(tmp_path: Path) -> None:
    """control(start, {"strategy": ...}) picks the strategy before generation 0 (the stored
    run records it); afterwards another strategy is refused naming the state."""
    db = tmp_path / "runs.db"
    engine = Engine(AgentDesign(), seed=1, population_size=12, store=db)
    run_id = engine.ensure_run()  # as a server with a durable store does at its start
    with pytest.raises(InvalidParameters, match="latency"):
        engine.control("start", {"strategy": {"name": "nsga2", "objectives": ["latency"]}})
    assert (engine.state.value, engine.strategy.name) == ("idle", "ga")
    result = engine.control("set_parameters", {"strategy": "nsga2", "mutation_rate": 0.2})
    assert result.strategy == {"name": "nsga2", "config": engine.strategy.config}  # type: ignore[attr-defined]
    engine.step()
    assert engine.population is not None
    with pytest.raises(InvalidState) as info:
        engine.control("set_parameters", {"strategy": "map-elites"})
    assert info.value.details["state"] == "idle"
    assert engine.strategy.name == "nsga2"
    engine.control("set_parameters", {"strategy": "nsga2"})  # the same one: accepted
    engine.close()
    reopened = Engine.open(db, run_id)
    assert reopened.strategy.name == "nsga2"
    reopened.close()


async def test_strategy_choice_over_the_api() -> None:
    """Over the WebSocket API: a bad strategy is INVALID_COMMAND naming it with the run
    untouched; a good one is acked with the strategy, and its measures stream."""
    server = make_server(engine=Engine(seed=1, population_size=16))
    async with server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["evolution"]})
        bad = await c.request(
            {
                "type": "control",
                "action": "start",
                "parameters": {"strategy": {"name": "map-elites", "descriptors": ["hue"]}},
            }
        )
        assert bad["error"]["code"] == "INVALID_COMMAND"
        assert "'hue'" in bad["error"]["message"]
        assert server.engine.state.value == "idle"
        started = await c.request(
            {"type": "control", "action": "start", "parameters": {"strategy": "nsga2"}}
        )
        assert started["data"]["strategy"]["name"] == "nsga2"
        update = await c.event("evolution_update", generation=2)
        assert update["data"]["front_size"] >= 1
        assert "hypervolume" in update["data"]
        await c.request({"type": "control", "action": "stop"})


async def test_get_front_and_get_archive_over_the_api() -> None:
    """get_front returns the NSGA-II front (objectives, reference); get_archive on that run
    is INVALID_COMMAND naming the strategy; a viewer may ask."""
    engine = Engine(AgentDesign(), strategy=NSGA2(), seed=2, population_size=20)
    for _ in range(6):
        engine.step()
    server = make_server(engine=engine)
    async with server, client(server, role="viewer") as c:
        reply = await c.request({"type": "get_front"})
        assert reply["type"] == "front"
        data = reply["data"]
        assert data["generation"] == 5
        assert data["objectives"] == ["max:fitness", "min:memory_kb", "min:speed_us"]
        assert len(data["reference"]) == 3
        assert len(data["agents"]) == engine._members.__len__()
        first = data["agents"][0]
        assert {"agent_id", "fitness", "memory_kb", "speed_us", "objectives"} <= set(first)
        assert first["objectives"] == [first["fitness"], first["memory_kb"], first["speed_us"]]
        wrong = await c.request({"type": "get_archive"})
        assert wrong["error"]["code"] == "INVALID_COMMAND"
        assert "'nsga2'" in wrong["error"]["message"]


def test_archive_member_set_names_cells() -> None:
    """member_set("archive") lists every elite with its cell and descriptor values."""
    engine = _map_elites()
    for _ in range(5):
        engine.step()
    data = engine.member_set("archive")
    pop = engine.population
    assert pop is not None
    assert len(data["agents"]) == len(pop)
    assert data["bins"] == [8, 8]
    cells = {tuple(a["cell"]) for a in data["agents"]}
    assert len(cells) == len(pop)  # one elite per cell
    assert all(0 <= i < 8 and 0 <= j < 8 for i, j in cells)
    with pytest.raises(InvalidCommand, match="keeps no front"):
        engine.member_set("front")
    assert Engine(AgentDesign(), seed=1).member_set.__name__  # GA: refused below
    with pytest.raises(InvalidCommand, match="'ga'"):
        Engine(AgentDesign(), seed=1).member_set("front")


def test_uploads_never_change_a_stored_population() -> None:
    """An upload replaces an offspring row in a copy, even when the strategy proposes the
    population's own genes array; the snapshot of the previous generation is unchanged."""

    class Reevaluate(MapElites):
        def ask(self, rng: Any, state: Any, run: Any) -> Any:
            if run.population is None:
                return super().ask(rng, state, run)
            return Offspring(run.population.genes), state  # the population's own array

    engine = Engine(
        ProjectedRastrigin(dims=4),
        strategy=Reevaluate(bins=(4, 4), ranges=[(-10.24, 10.24)] * 2),
        seed=1,
        population_size=10,
        **FREE,
    )
    engine.step()
    engine.step()
    assert engine.run_id is not None
    before = engine.store.load_snapshot(engine.run_id, 0, 1).population.genes.copy()
    genome = engine.agent(f"agent-{int(engine.population.agent_id[0])}").genes  # type: ignore[union-attr]
    engine.add_agent({**genome, "x0": 0.5})
    engine.step()
    after = engine.store.load_snapshot(engine.run_id, 0, 1).population.genes
    np.testing.assert_array_equal(after, before)


def test_member_set_replies_are_bounded() -> None:
    """A front or archive reply lists at most MAX_MEMBERS agents and says the total."""
    from tdevlab.engine import agents as agents_module

    engine = _map_elites()
    for _ in range(5):
        engine.step()
    pop = engine.population
    assert pop is not None
    saved = agents_module.MAX_MEMBERS
    agents_module.MAX_MEMBERS = 3
    try:
        data = engine.member_set("archive")
    finally:
        agents_module.MAX_MEMBERS = saved
    assert (data["total"], data["truncated"], len(data["agents"])) == (len(pop), True, 3)
    best = sorted(pop.fitness.tolist(), reverse=True)[:3]
    assert sorted((a["fitness"] for a in data["agents"]), reverse=True) == best


@pytest.mark.parametrize(("make", "kind"), [(_nsga2, "front"), (_map_elites, "archive")])
def test_fronts_and_archives_are_exported_and_read_back(
    make: Any, kind: str, tmp_path: Path
) -> None:
    """The dataset has a front (NSGA-II) or archive (MAP-Elites) table per stored
    generation, equal to what the strategy announced live, and load_run reads it back."""
    engine = make(store=tmp_path / "runs.db")
    members_by_generation = {}
    for _ in range(6):
        engine.step()
        members_by_generation[engine.generation] = sorted(f"agent-{i}" for i in engine._members)
    data = load_run(engine.export(tmp_path / "ds"))
    table = getattr(data, kind)
    assert table is not None
    assert getattr(data, "archive" if kind == "front" else "front") is None
    for generation, members in members_by_generation.items():
        rows = table[table["generation"] == generation]
        assert sorted(rows["agent_id"]) == members
    if kind == "front":
        assert {"objective_memory_kb", "objective_speed_us"} <= set(table.columns)
    else:
        assert {"descriptor_memory_kb", "cell_speed_us"} <= set(table.columns)
    engine.close()


def test_a_ga_dataset_has_no_member_table(tmp_path: Path) -> None:
    """The GA keeps no set: its dataset has the four tables only."""
    engine = Engine(seed=1, population_size=8)
    engine.step()
    data = load_run(engine.export(tmp_path / "ds"))
    assert data.front is None
    assert data.archive is None
    assert sorted(data.tables()) == ["agents", "events", "generations", "population"]
