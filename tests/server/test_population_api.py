"""get_population over a real server: every live agent, not only the notable ones."""

from __future__ import annotations

import pytest

from tdevlab import Engine
from tdevlab.engine.events import STATUS_NAMES
from tests.serving import client, connected, make_server

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def test_get_population_lists_every_live_agent() -> None:
    """A `population` reply holds each agent of the current population once, to viewers too,
    with its status, metrics and birth generation, as the engine has them."""
    engine = Engine(seed=4, population_size=25)
    list(engine.run(generations=6))
    async with make_server(engine=engine) as server, client(server, role="viewer") as c:
        reply = await c.request({"type": "get_population"})
        assert reply["type"] == "population"
        data = reply["data"]
        assert engine.population is not None
        assert (data["generation"], data["branch"], data["total"]) == (5, 0, 25)  # 0..5
        assert data["truncated"] is False
        ids = [a["agent_id"] for a in data["agents"]]
        assert ids == [f"agent-{n}" for n in engine.population.agent_id.tolist()]
        first = data["agents"][0]
        agent = engine.agent(first["agent_id"])
        assert first == {
            "agent_id": agent.agent_id,
            "status": agent.status,
            "fitness": agent.fitness,
            "memory_kb": agent.memory_kb,
            "speed_us": agent.speed_us,
            "birth_generation": agent.birth_generation,
        }
        assert {a["status"] for a in data["agents"]} <= set(STATUS_NAMES)


async def test_get_population_before_a_generation_and_from_the_client() -> None:
    """Before generation 0 the population is empty; the client's get_population returns the
    reply's data."""
    async with make_server() as server, connected(server) as lib:
        data = await lib.get_population()
        assert data["agents"] == []
        assert data["total"] == 0
