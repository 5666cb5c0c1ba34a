"""No parameter can exhaust the engine: every one is bounded, and memory stays bounded."""

from __future__ import annotations

import asyncio
import math

import pytest

from tdevlab import Engine, MemoryStore, Sphere
from tdevlab.engine.params import BOUNDS, MAX_POPULATION, Parameters
from tdevlab.exceptions import GenerationNotFound, InvalidParameters
from tests.server.conftest import client, make_server


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


def test_parameter_bomb_over_the_api_is_invalid_command() -> None:
    """set_parameters with population_size 400000 is INVALID_COMMAND naming the maximum; the
    run then starts with the parameters it had."""

    async def main() -> None:
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

    asyncio.run(main())
