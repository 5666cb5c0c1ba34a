"""The client against a real server on 127.0.0.1: requests, errors, events, reconnects."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import tdevlab
from tdevlab import Engine, Float, FunctionProblem
from tdevlab.client import AgentCode, Backoff, Client
from tdevlab.client.streams import error_from_message
from tdevlab.exceptions import (
    AgentNotFound,
    AuthFailed,
    ConnectionClosed,
    ConstraintViolation,
    EvolutionFailed,
    InvalidCommand,
    RateLimited,
    Unauthorized,
)
from tdevlab.protocol.auth import TokenVerifier, issue_token
from tdevlab.protocol.limits import Limits
from tdevlab.server import EvolutionServer
from tests.conftest import eventually
from tests.serving import SECRET, TIMEOUT, CountingBackoff, connected, make_server

FAST = Backoff(initial=0.05, cap=0.2, max_attempts=200)


def _generations(client: Client) -> list[int]:
    return client.frames.evolution.index.tolist()  # type: ignore[no-any-return]


async def test_every_request_gets_its_reply() -> None:
    """Subscribe, ping, control, set_parameters, rollback, agents and code all round-trip."""
    async with make_server() as server:
        client = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        ack = await client.subscribe("evolution", "control", history=False)
        assert ack["channels"] == ["control", "evolution"]
        assert ack["run"]["state"] == "idle"
        assert client.run_state == "idle"
        assert await client.ping() > 0
        started = await client.start(population_size=24, mutation_rate=0.2)
        assert (started["state"], client.run_state) == ("running", "running")
        assert client.parameters["population_size"] == 24
        update = await client.wait_for("evolution", lambda m: m["data"]["generation"] >= 3)
        await client.pause()
        assert client.run_state == "paused"
        changed = await client.set_parameters(mutation_rate=0.3)
        assert changed["parameters"]["mutation_rate"] == 0.3
        assert client.parameters["mutation_rate"] == 0.3
        rolled = await client.rollback(2)
        assert (rolled["generation"], rolled["branch"]) == (2, 1)
        agent_id = update["data"]["best_agent_id"]
        agent = await client.get_agent(agent_id)
        assert agent["agent_id"] == agent_id
        assert set(agent["genes"]) >= {"learning_rate", "architecture"}
        code = await client.get_agent_code(agent_id)
        assert isinstance(code, AgentCode)
        assert (code.agent_id, code.name) == (agent_id, agent["name"])
        assert "learning_rate = " in code.text
        uploaded = await client.upload_agent_code(code.text)
        assert uploaded["agent"]["agent_id"] != agent_id
        await client.resume()
        assert client.run_state == "running"
        await client.stop()
        assert client.run_state == "stopped"
        left = await client.unsubscribe("control")
        assert left["channels"] == ["evolution"]
        await client.close()
        assert client.connection_state == "closed"
        with pytest.raises(ConnectionClosed):
            await client.ping()


async def test_both_ways_to_authenticate() -> None:
    """The token works in the Authorization header and in a first auth message."""
    async with make_server() as server:
        token = server.token("ada", "viewer")
        for auth in ("header", "message"):
            async with await tdevlab.connect(server.url, token=token, auth=auth) as client:
                assert (await client.subscribe("metrics"))["channels"] == ["metrics"]


@pytest.mark.slow
async def test_every_error_code_surfaces_as_its_exception() -> None:
    """Each wire error code reaches the caller as its exception, with the server's message."""
    limits = Limits(messages_per_second=20, connections_per_user=2)
    async with make_server(limits=limits) as server:
        for auth in ("header", "message"):
            with pytest.raises(AuthFailed):
                await tdevlab.connect(server.url, token="not-a-jwt", auth=auth)
        viewer = await tdevlab.connect(server.url, token=server.token("val", "viewer"))
        with pytest.raises(Unauthorized, match="operator"):
            await viewer.start()
        operator = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        second = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        with pytest.raises(RateLimited, match="429"):  # a third connection of ada's
            await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        await second.close()
        with pytest.raises(InvalidCommand, match="cannot pause") as refused:
            await operator.pause()
        assert refused.value.details["state"] == "idle"
        with pytest.raises(InvalidCommand, match="mutation_rate"):
            await operator.start(mutation_rate=7)
        with pytest.raises(AgentNotFound, match="agent-999999"):
            await operator.get_agent("agent-999999")
        with pytest.raises(ConstraintViolation):
            await operator.upload_agent_code("x = 1\n" * 2000)
        with pytest.raises(InvalidCommand, match="population_size=-3"):
            await operator.set_parameters(population_size=-3)
        results = await asyncio.gather(
            *(operator.ping() for _ in range(40)), return_exceptions=True
        )
        assert any(isinstance(r, RateLimited) for r in results)
        assert any(isinstance(r, float) for r in results)
        await viewer.close()
        await operator.close()


async def test_a_failing_run_reaches_callbacks_as_evolution_failed() -> None:
    """An engine failure arrives as an error event (EVOLUTION_FAILED) and a failed run state."""

    def broken(agent: dict[str, Any]) -> float:
        raise ValueError(f"cannot score {agent}")

    problem = FunctionProblem(broken, [Float("x", 0.0, 1.0)])
    async with (
        make_server(engine=Engine(problem, population_size=8)) as server,
        connected(server) as client,
    ):
        errors: list[dict[str, Any]] = []
        client.on("error", errors.append)
        await client.subscribe("evolution", "control")
        await client.start()
        await eventually(lambda: bool(errors) and client.run_state == "failed")
        exc = error_from_message(errors[0])
        assert isinstance(exc, EvolutionFailed)
        assert "cannot score" in str(exc)


async def test_events_reach_callbacks_iterators_and_frames_once_each() -> None:
    """Every event goes to on() callbacks, events() iterators and the frames, once each."""
    async with make_server() as server:
        client = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
        seen: list[int] = []
        states: list[str] = []
        client.on("evolution", lambda m: seen.append(m["data"]["generation"]))
        client.on("state", states.append)
        iterated: list[int] = []

        async def consume() -> None:
            async for event in client.events("evolution_update"):
                iterated.append(event["data"]["generation"])

        consumer = asyncio.get_running_loop().create_task(consume())
        await client.subscribe("evolution", "agents", "logs", "control")
        await client.start()
        await client.wait_for("evolution", lambda m: m["data"]["generation"] >= 20)
        await client.stop()
        await eventually(lambda: client.frames.evolution.index.max() == client.generation)
        await client.close()
        await asyncio.wait_for(consumer, TIMEOUT)  # ends when the client closes
        frame = _generations(client)
        assert frame == seen == iterated == list(range(len(frame)))
        assert states[-1] == "closed"
        assert len(client.frames.agents) > 0
        assert len(client.frames.logs) > 0


async def test_connection_cut_by_the_server_is_restored_without_gaps() -> None:
    """Connections aborted by the server are re-established; every generation arrives once."""
    async with make_server() as server, connected(server, backoff=FAST) as client:
        await client.subscribe("evolution", "control")
        await client.start()
        for cut in (10, 40, 80):
            await client.wait_for("evolution", lambda m, c=cut: m["data"]["generation"] >= c)
            for connection in list(server.hub.connections):
                connection.abort()  # as the server does to a stalled reader
            await eventually(lambda: client.connection_state == "reconnecting")
            await client.wait_open()
        await client.wait_for("evolution", lambda m: m["data"]["generation"] >= 120)
        await client.stop()
        last = client.generation
        assert last is not None
        await eventually(lambda: _generations(client)[-1] == last)
        assert _generations(client) == list(range(last + 1))
        assert client.reconnects == 3


async def test_requests_made_while_down_are_sent_after_reconnecting() -> None:
    """While the server is away, requests queue; they go out once it is back."""
    engine = Engine(seed=3, population_size=20)
    first = make_server(engine=engine)
    await first.__aenter__()
    port = int(first.url.rsplit(":", 1)[1].split("/")[0])
    backoff = CountingBackoff(initial=0.05, cap=0.2, max_attempts=200)
    client = await tdevlab.connect(first.url, token=first.token("ada", "operator"), backoff=backoff)
    await client.subscribe("control")
    await first.__aexit__(None, None, None)
    await eventually(lambda: client.connection_state == "reconnecting")
    queued = [asyncio.ensure_future(client.ping()), asyncio.ensure_future(client.start())]
    await eventually(lambda: len(backoff.attempts) >= 3)  # two attempts refused meanwhile
    assert not any(task.done() for task in queued)
    async with EvolutionServer(engine, host="127.0.0.1", port=port, secret=SECRET):
        rtt, started = await asyncio.gather(*queued)
        assert rtt > 0
        assert started["state"] == "running"
        await client.stop()
        await client.close()


async def test_token_refused_on_reconnect_fails_once_without_retrying() -> None:
    """A server that refuses the token after a restart ends the client: no retry storm."""
    engine = Engine(seed=3, population_size=20)
    first = make_server(engine=engine)
    await first.__aenter__()
    port = int(first.url.rsplit(":", 1)[1].split("/")[0])
    attempts: list[str] = []
    backoff = CountingBackoff(initial=0.05, cap=0.2, max_attempts=200)
    client = await tdevlab.connect(first.url, token=first.token("ada", "operator"), backoff=backoff)
    client.on("state", attempts.append)
    await first.__aexit__(None, None, None)
    other_secret = "another-secret-that-is-long-enough-for-hs256"
    async with EvolutionServer(engine, host="127.0.0.1", port=port, secret=other_secret):
        await eventually(lambda: client.connection_state == "failed")
        assert isinstance(client.error, AuthFailed)
        assert "401" in str(client.error)
        tried = len(backoff.attempts)
        with pytest.raises(AuthFailed):
            await client.ping()
        # Failed for good: the request did not start a reconnect, nothing retries.
        assert attempts == ["reconnecting", "failed"]
        assert client.reconnects == 0
        assert len(backoff.attempts) == tried == 1


@pytest.mark.slow
async def test_a_static_token_that_expires_ends_the_client_with_auth_failed() -> None:
    """Close 1008 on expiry, then HTTP 401 on the reconnect: failed, and no more attempts."""
    async with make_server(verifier=TokenVerifier(SECRET, leeway=0)) as server:
        # exp is whole seconds: 2 s leave at least one for the first connect.
        token = issue_token(SECRET, "ada", "operator", now=time.time(), ttl=2.0)
        client = await tdevlab.connect(server.url, token=token, backoff=FAST)
        states: list[str] = []
        client.on("state", states.append)
        await eventually(lambda: client.connection_state == "failed")
        assert isinstance(client.error, AuthFailed)
        assert "401" in str(client.error)
        assert states == ["reconnecting", "failed"]
        assert client.reconnects == 0


async def test_a_client_closed_for_flooding_reconnects() -> None:
    """Close 1008 without AUTH_FAILED (flooding) is no auth failure: the client comes back."""
    limits = Limits(messages_per_second=5, flood_factor=1)
    async with make_server(limits=limits) as server, connected(server, backoff=FAST) as client:
        flood = [client.stop() for _ in range(30)]
        outcomes = await asyncio.gather(*flood, return_exceptions=True)
        assert any(isinstance(o, RateLimited) for o in outcomes)
        await eventually(lambda: client.reconnects >= 1 and client.connection_state == "open")
        assert client.error is None
        assert await client.ping() > 0


def test_sync_client_mirrors_the_async_one(threaded_server: EvolutionServer) -> None:
    """The blocking twin connects, requests, waits for events and reads frames."""
    with tdevlab.connect_sync(
        threaded_server.url, token=threaded_server.token("ada", "operator")
    ) as client:
        assert client.subscribe("evolution", "control")["channels"] == ["control", "evolution"]
        assert client.start(population_size=22)["state"] == "running"
        client.wait_for("evolution", lambda m: m["data"]["generation"] >= 5, timeout=TIMEOUT)
        assert client.pause()["state"] == "paused"
        generation = client.generation
        assert generation is not None
        assert client.frames.evolution.index.max() >= 5
        assert client.get_agent(client.frames.evolution["best_agent_id"].iloc[-1])
        future = client.call("resume")
        assert future.result(TIMEOUT)["state"] == "running"
        events = client.events("evolution", timeout=TIMEOUT)
        assert next(events)["data"]["generation"] > generation
        events.close()
        client.stop()
    assert client.connection_state == "closed"
