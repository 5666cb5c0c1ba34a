"""No parameter can exhaust the engine: every one is bounded, and memory stays bounded."""

from __future__ import annotations

import math

import pytest

from tdevlab import Engine, MemoryStore, Sphere
from tdevlab.engine.params import BOUNDS, MAX_POPULATION, Parameters
from tdevlab.exceptions import GenerationNotFound, InvalidParameters
from tests.serving import client, make_server


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"population_size": 400_000}, "maximum of"),
        ({"population_size": 10**9}, "must be within [2, 10000000]"),
        ({"tournament_size": 10**6}, "tournament_size=1000000 must be within [1, population_size"),
        ({"mutation_sigma": 1e308}, "mutation_sigma=1e+308 must be at most 10"),
        ({"memory_limit_kb": 1e300}, "memory_limit_kb=1e+300 must be at most 1e+09"),
        ({"speed_limit_us": 1e300}, "speed_limit_us=1e+300 must be at most 1e+09"),
        ({"blend_alpha": 1e9}, "blend_alpha=1000000000.0 must be at most 10"),
        ({"mutation_sigma": math.inf}, "must be finite"),
    ],
)
def test_out_of_bounds_parameters_are_refused_and_nothing_changes(
    changes: dict[str, float], named: str
) -> None:
    """Each bound is named in the refusal, and the engine keeps its parameters."""
    engine = Engine(seed=1, population_size=20)
    before = engine.params
    with pytest.raises(InvalidParameters) as info:
        engine.set_parameters(**changes)
    assert named in str(info.value)
    assert engine.params == before
    with pytest.raises(InvalidParameters):
        engine.control("start", changes)
    assert engine.state.value == "idle"


def test_population_bound_follows_the_memory_budget() -> None:
    """max_population is the budget over the bytes an agent costs in a generation's copies."""
    small = Engine(Sphere(dims=100), max_population_memory=8 * 1024 * 1024, population_size=10)
    wide = Engine(Sphere(dims=2), max_population_memory=8 * 1024 * 1024, population_size=10)
    assert small.max_population < wide.max_population
    small.set_parameters(population_size=small.max_population)  # the bound itself is fine
    with pytest.raises(InvalidParameters) as info:
        small.set_parameters(population_size=small.max_population + 1)
    assert info.value.details["maximum"] == small.max_population
    with pytest.raises(InvalidParameters, match="max_population_memory"):
        Engine(max_population_memory=0)
    assert Parameters().replace({"population_size": MAX_POPULATION}).population_size > 0
    assert set(BOUNDS) <= set(Parameters.__struct_fields__)


def test_client_names_are_echoed_bounded() -> None:
    """A huge unknown parameter name comes back cut to a bounded size."""
    with pytest.raises(InvalidParameters) as info:
        Parameters().replace({"x" * 600_000: 1})
    assert len(str(info.value)) < 1_000
    assert len(repr(info.value.details)) < 1_000


def test_memory_store_keeps_snapshots_within_its_byte_budget() -> None:
    """Large populations: the memory store drops the oldest snapshots beyond keep_bytes."""
    store = MemoryStore(keep_bytes=1024 * 1024)
    engine = Engine(Sphere(dims=20), store=store, seed=2, population_size=2_000)
    for _ in range(12):
        engine.step()
    assert engine.run_id is not None
    run = store._runs[engine.run_id]
    assert run.snapshot_bytes <= 1024 * 1024
    assert 1 <= len(run.snapshots) < 12
    with pytest.raises(GenerationNotFound):
        engine.rollback(0)
    engine.rollback(engine.generation - 1)  # the newest ones are kept


async def test_parameter_bomb_over_the_api_is_invalid_command() -> None:
    """set_parameters with population_size 400000 is INVALID_COMMAND naming the maximum; the
    run then starts with the parameters it had."""
    server = make_server(engine=Engine(seed=1, population_size=20))
    async with server, client(server) as c:
        reply = await c.request(
            {"type": "command", "cmd": "set_parameters", "args": {"population_size": 400000}}
        )
        assert reply["type"] == "error"
        assert reply["error"]["code"] == "INVALID_COMMAND"
        assert reply["error"]["details"]["maximum"] == server.engine.max_population
        started = await c.request({"type": "control", "action": "start"})
        assert started["data"]["parameters"]["population_size"] == 20


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"mutation_rate": 10**400}, "out of range"),
        ({"elite_count": 10**5000}, "integer of"),
        ({"population_size": -(10**30)}, "out of range"),
    ],
)
def test_huge_integers_are_refused_not_crashed_on(changes: dict[str, int], named: str) -> None:
    """Integers beyond any float or repr are InvalidParameters, never OverflowError."""
    with pytest.raises(InvalidParameters, match=named):
        Engine(seed=1).set_parameters(**changes)


def test_nsga2_population_is_bounded_by_its_dominance_matrix() -> None:
    """NSGA-II's (2n)^2 sort matrix bounds its population well below the linear bound."""
    from tdevlab.engine import NSGA2

    budget = 4 * 1024 * 1024
    ga = Engine(seed=1, max_population_memory=budget)
    nsga = Engine(seed=1, strategy=NSGA2(), max_population_memory=budget, population_size=10)
    assert nsga.max_population < ga.max_population
    assert (2 * nsga.max_population) ** 2 * 3 <= budget
    with pytest.raises(InvalidParameters, match="strategy 'nsga2'"):
        nsga.set_parameters(population_size=nsga.max_population + 1)
    with pytest.raises(InvalidParameters, match="over this engine's maximum"):
        ga.control("set_parameters", {"population_size": 2000, "strategy": "nsga2"})
    assert ga.strategy.name == "ga"  # refused as a whole


def test_archive_grid_must_fit_the_budget() -> None:
    """A MAP-Elites grid with more cells than the budget holds agents is refused."""
    from tdevlab.engine import MapElites

    engine = Engine(seed=1, max_population_memory=1024 * 1024)
    with pytest.raises(InvalidParameters, match="cells could hold more agents"):
        engine.control("start", {"strategy": {"name": "map-elites", "bins": [100, 100]}})
    assert engine.state.value == "idle"
    with pytest.raises(InvalidParameters, match="more than 1000000 cells"):
        MapElites(descriptors=("memory_kb", "speed_us", "fitness"), bins=(1000, 1000, 2))


def test_bad_values_in_strategy_settings_are_invalid_parameters() -> None:
    """Strings or huge numbers where settings want numbers: InvalidParameters, named."""
    engine = Engine(seed=1)
    for spec in (
        {"name": "map-elites", "ranges": [["a", 1], [0, 1]]},
        {"name": "map-elites", "ranges": [[10**400, 1], [0, 1]]},
        {"name": "nsga2", "objectives": ["fitness"] * 6},
        {"name": "nsga2", "objectives": ["fitness", "max:fitness"]},
        {"name": "nsga2", "crossover_eta": "x"},
    ):
        with pytest.raises(InvalidParameters):
            engine.control("set_parameters", {"strategy": spec})
    assert engine.strategy.name == "ga"
