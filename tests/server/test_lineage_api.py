"""get_lineage, get_agent_code of any stored agent, and command branch over a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tdevlab
from tdevlab import Engine
from tdevlab.exceptions import AgentNotFound, InvalidCommand
from tdevlab.server import EvolutionServer
from tests.conftest import eventually
from tests.serving import client, connected, make_server

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _server(tmp_path: Path) -> EvolutionServer:
    """A server over a SQLite run with a fork: generations 0..39, then 20..34 on branch 1."""
    engine = Engine(seed=3, population_size=20, store=tmp_path / "run.db")
    list(engine.run(generations=40))
    engine.rollback(20)
    list(engine.run(generations=14))
    return make_server(engine=engine)


def _where(server: EvolutionServer) -> tuple[int, int, int]:
    run_id = server.engine.run_id
    assert run_id is not None
    return server.engine.generation, server.engine.branch, len(server.engine.store.branches(run_id))


async def test_get_lineage_answers_the_engines_lineage(tmp_path: Path) -> None:
    """A `lineage` message carries engine.lineage's tables (depth 200 unless asked), to viewers
    too."""
    async with _server(tmp_path) as server, client(server, role="viewer") as c:
        engine = server.engine
        assert engine.population is not None
        best = f"agent-{int(engine.population.agent_id[0])}"
        reply = await c.request({"type": "get_lineage", "agent_id": best})
        assert reply["type"] == "lineage"
        assert reply["data"] == engine.lineage(best, depth=200).to_dict()
        assert set(reply["data"]["nodes"]["branch"]) == {0, 1}
        ancestor = reply["data"]["nodes"]["agent_id"][3]
        reply = await c.request(
            {"type": "get_lineage", "agent_id": ancestor, "depth": 3, "descendants": True}
        )
        assert reply["data"] == engine.lineage(ancestor, 3, descendants=True).to_dict()
        assert "descendant" in reply["data"]["nodes"]["relation"]


async def test_agent_code_of_retired_and_abandoned_agents(tmp_path: Path) -> None:
    """get_agent_code answers for an agent long retired and one of the abandoned branch."""
    async with _server(tmp_path) as server, client(server, role="viewer") as c:
        run_id = server.engine.run_id
        assert run_id is not None
        abandoned = server.engine.store.load_snapshot(run_id, 0, 39).population.agent_id[0]
        for agent in ("agent-3", f"agent-{int(abandoned)}"):
            assert server.engine.population is not None
            assert int(agent[6:]) not in server.engine.population.agent_id.tolist()
            await c.send(json.dumps({"type": "get_agent_code", "agent_id": agent, "id": agent}))
            frame = await c.wait_for(lambda m: isinstance(m, bytes))
            meta, code = frame.decode().split("\n", 1)
            assert json.loads(meta)["reply_to"] == agent
            assert code == server.engine.agent_code(agent)


async def test_branch_command_forks_from_an_agents_generation(tmp_path: Path) -> None:
    """command branch is acked with the agent, generation, new branch and state, announced as a
    control_update, and the next generation continues the new branch."""
    async with _server(tmp_path) as server, client(server) as c:
        run_id = server.engine.run_id
        assert run_id is not None
        agent = int(server.engine.store.load_snapshot(run_id, 0, 30).population.agent_id[0])
        born = server.engine.agent(agent).birth_generation
        await c.request({"type": "subscribe", "channels": ["control"]})
        reply = await c.request(
            {
                "type": "command",
                "cmd": "branch",
                "args": {"agent_id": f"agent-{agent}", "parameters": {"mutation_rate": 0.2}},
            }
        )
        assert reply["type"] == "ack"
        assert reply["data"] == {
            "request": "command",
            "cmd": "branch",
            "agent_id": f"agent-{agent}",
            "generation": born,
            "branch": 2,
            "state": "idle",
        }
        update = await c.event("control_update", action="branch")
        assert update["data"]["parameters"]["mutation_rate"] == 0.2
        assert server.engine.step().evolution.generation == born + 1
        assert server.engine.branch == 2


async def test_bad_lineage_and_branch_requests_name_the_fault(tmp_path: Path) -> None:
    """Unknown agents are AGENT_NOT_FOUND, depths outside 1..10000 and malformed branches
    INVALID_COMMAND, naming what was wrong; viewers may not branch; the run is untouched."""
    async with (
        _server(tmp_path) as server,
        client(server) as c,
        client(server, role="viewer", user="vi") as viewer,
    ):
        before = _where(server)

        def lineage(**fields: Any) -> dict[str, Any]:
            return {"type": "get_lineage", **fields}

        def branch(**args: Any) -> dict[str, Any]:
            return {"type": "command", "cmd": "branch", "args": args}

        unknown, invalid = "AGENT_NOT_FOUND", "INVALID_COMMAND"
        cases: list[tuple[dict[str, Any], str, str]] = [
            (lineage(agent_id="agent-999999"), unknown, "agent-999999"),
            (lineage(agent_id="nobody"), unknown, "nobody"),
            (lineage(agent_id="agent-1", depth=0), invalid, "depth"),
            (lineage(agent_id="agent-1", depth=10001), invalid, "10000"),
            (lineage(agent_id="agent-1", depth="9"), invalid, "depth"),
            (lineage(), invalid, "agent_id"),
            (branch(), invalid, "agent_id"),
            (branch(agent_id=5), invalid, "agent_id"),
            (branch(agent_id="agent-1", when=1), invalid, "when"),
            (branch(agent_id="agent-1", parameters=3), invalid, "parameters"),
            (branch(agent_id="agent-1", parameters={"mutation_rate": 5}), invalid, "mutation_rate"),
            (branch(agent_id="agent-999999"), unknown, "agent-999999"),
        ]
        for message, code, named in cases:
            reply = await c.request(message)
            assert reply["type"] == "error", (message, reply)
            assert reply["error"]["code"] == code, (message, reply)
            assert named in reply["error"]["message"], (message, reply)
        refused = await viewer.request(
            {"type": "command", "cmd": "branch", "args": {"agent_id": "agent-1"}}
        )
        assert refused["error"]["code"] == "UNAUTHORIZED"
        assert "branch" in refused["error"]["message"]
        depth = await c.request({"type": "get_lineage", "agent_id": "agent-1", "depth": 10001})
        assert depth["error"]["details"]["maximum"] == 10000
        assert _where(server) == before


async def test_branch_while_a_rollback_is_in_progress_is_refused(tmp_path: Path) -> None:
    """A branch sent while a rollback waits for the generation in progress is INVALID_COMMAND
    naming the rollback; the rollback then completes and is acked."""
    async with _server(tmp_path) as server, client(server) as c, client(server, user="bo") as other:
        engine = server.engine
        engine._lock.acquire()  # a generation in progress holds it
        try:
            await c.send(json.dumps({"type": "command", "cmd": "rollback", "id": "rb",
                                     "args": {"generation": 5}}))  # fmt: skip
            await eventually(lambda: engine._run._moves, what="the rollback to begin")
            before = _where(server)
            reply = await other.request(  # a connection's requests are answered in order
                {"type": "command", "cmd": "branch", "args": {"agent_id": "agent-1"}}
            )
            assert reply["error"]["code"] == "INVALID_COMMAND"
            assert reply["error"]["details"]["in_progress"] == "rollback"
            assert "rollback is in progress" in reply["error"]["message"]
            assert _where(server) == before
        finally:
            engine._lock.release()
        ack = await c.wait_for(lambda m: isinstance(m, dict) and m.get("reply_to") == "rb")
        assert ack["type"] == "ack"
        assert ack["data"]["generation"] == 5


async def test_library_client_lineage_and_branch(tmp_path: Path) -> None:
    """Client.get_lineage and Client.branch send the requests and return the replies' data;
    errors raise the classes of their codes."""
    async with _server(tmp_path) as server, connected(server) as c:
        data = await c.get_lineage("agent-300", 5)
        assert data == server.engine.lineage("agent-300", 5).to_dict()
        assert (await c.get_lineage("agent-300", descendants=True))["nodes"]["relation"][
            0
        ] == "self"
        ack = await c.branch("agent-300", {"mutation_rate": 0.1})
        assert ack["branch"] == server.engine.branch
        with pytest.raises(AgentNotFound):
            await c.get_lineage("agent-999999")
        with pytest.raises(InvalidCommand):
            await c.get_lineage("agent-300", 0)


def test_blocking_client_lineage_and_branch(tmp_path: Path) -> None:
    """The blocking facade has get_lineage and branch too."""
    server = _server(tmp_path)
    server.start()
    try:
        with tdevlab.connect_sync(server.url, token=server.token("ada", "operator")) as c:
            assert c.get_lineage("agent-300", 4) == server.engine.lineage("agent-300", 4).to_dict()
            assert c.branch("agent-300")["cmd"] == "branch"
            with pytest.raises(AgentNotFound):
                c.branch("agent-999999")
    finally:
        server.stop()
