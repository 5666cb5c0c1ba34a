"""The /v1/evolution server, end to end over real WebSocket connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Any

import jwt
import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tdevlab import Engine, InvalidParameters, SQLiteStore
from tdevlab.protocol.auth import TokenVerifier
from tdevlab.server import EvolutionServer
from tests.conftest import eventually, run, timeout
from tests.serving import SECRET, Client, client, make_server


async def drain(c: Client) -> None:
    """Read until the connection closes (bounded by the receive timeout)."""
    while True:
        await c.receive()


async def test_both_auth_paths_and_ping() -> None:
    """Header auth and first-message auth both work; ping gets a pong echoing the timestamp."""
    async with make_server() as server:
        async with client(server, header=True) as c:
            pong = await c.request({"type": "ping", "timestamp": 1704067200000})
            assert pong["type"] == "pong"
            assert pong["timestamp"] == 1704067200000
            assert pong["data"]["server_time"].endswith("Z")
        async with client(server) as c:
            pong = await c.request({"type": "ping", "timestamp": 42})
            assert pong["timestamp"] == 42


async def test_bad_header_token_is_refused_with_401_before_upgrade() -> None:
    """A bad Authorization header gets HTTP 401 and no WebSocket."""
    async with make_server() as server:
        forged = jwt.encode({"sub": "eve", "role": "operator", "exp": time.time() + 60}, "x" * 40)
        with pytest.raises(InvalidStatus) as info:
            async with connect(
                server.url, additional_headers={"Authorization": f"Bearer {forged}"}
            ):
                pass
        assert info.value.response.status_code == 401
        assert b"bad signature" in info.value.response.body


async def test_other_paths_get_404() -> None:
    """Only /v1/evolution is served."""
    async with make_server() as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url.replace("/v1/evolution", "/v2/other")):
                pass
        assert info.value.response.status_code == 404


async def test_bad_auth_message_gets_auth_failed_and_1008() -> None:
    """A bad auth message: AUTH_FAILED error, then close 1008 with a reason."""
    async with make_server() as server, connect(server.url) as ws:
        c = Client(ws)
        reply = await c.request({"type": "auth", "token": "not-a-jwt"})
        assert reply["error"]["code"] == "AUTH_FAILED"
        with pytest.raises(ConnectionClosed) as info:
            await c.receive()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1008
        assert "authentication failed" in info.value.rcvd.reason


async def test_messages_before_auth_are_unauthorized_and_timeout_closes() -> None:
    """Before auth: UNAUTHORIZED replies; no auth within the timeout: close 1008."""
    async with make_server(auth_timeout=timeout(0.5)) as server, connect(server.url) as ws:
        c = Client(ws)
        reply = await c.request({"type": "subscribe", "channels": ["evolution"]})
        assert reply["error"]["code"] == "UNAUTHORIZED"
        with pytest.raises(ConnectionClosed) as info:
            await c.receive()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1008
        assert "authentication timeout" in info.value.rcvd.reason


@pytest.mark.slow
async def test_expired_token_on_live_connection_closes_with_reason() -> None:
    """When the token expires, the connection is closed with a reason that says so."""
    # A small leeway keeps the test short (the default tolerates 5 s of clock skew).
    verifier = TokenVerifier(SECRET, leeway=0.2)
    async with make_server(verifier=verifier) as server, connect(server.url) as ws:
        c = Client(ws)
        token = jwt.encode(
            {"sub": "ada", "role": "viewer", "exp": time.time() + timeout(1.0)}, SECRET, "HS256"
        )
        assert (await c.request({"type": "auth", "token": token}))["type"] == "ack"
        with pytest.raises(ConnectionClosed) as info:
            await drain(c)
        assert info.value.rcvd is not None
        assert "token expired" in info.value.rcvd.reason


async def test_control_start_streams_every_channel_and_stop() -> None:
    """An operator starts a run: evolution, agents, logs, alerts, control, metrics all flow."""
    async with make_server() as server, client(server) as c:
        ack = await c.request(
            {"type": "subscribe", "channels": ["evolution", "agents", "logs", "control"]}
        )
        assert ack["data"]["channels"] == ["agents", "control", "evolution", "logs"]
        ack = await c.request({"type": "subscribe", "channel": "metrics"})
        assert "metrics" in ack["data"]["channels"]
        await c.request({"type": "subscribe", "channels": ["alerts"]})
        reply = await c.request(
            {"type": "control", "action": "start", "parameters": {"mutation_rate": 0.2}}
        )
        assert reply["type"] == "ack"
        assert reply["data"]["state"] == "running"
        assert reply["data"]["parameters"]["mutation_rate"] == 0.2
        control = await c.event("control_update", state="running")
        assert control["channel"] == "control"
        first = await c.event("evolution_update", generation=0)
        for field in ("generation", "average_fitness", "best_fitness", "improvement",
                      "agents_evolved", "mutations_applied", "crossovers"):  # fmt: skip
            assert field in first["data"]
        assert first["timestamp"].endswith("Z")
        assert first["channel"] == "evolution"
        later = await c.event("evolution_update", generation=3)
        assert later["seq"] > first["seq"]
        agent = await c.event("agent_update")
        assert {"agent_id", "name", "status", "fitness", "memory_kb", "speed_us"} <= set(
            agent["data"]
        )
        log = await c.wait_for(
            lambda m: m.get("type") == "log" and "Mutation" in m["data"]["message"]
        )
        assert log["level"] == "info"
        assert log["data"]["details"]["mutation_type"] in {
            "parameter_adjustment",
            "categorical_switch",
        }
        metrics = await c.event("metrics")
        for field in ("cpu_usage", "memory_usage", "active_agents", "requests_per_second",
                      "average_latency_ms", "error_rate", "connections"):  # fmt: skip
            assert field in metrics["data"]
        assert metrics["data"]["active_agents"] == 20
        assert metrics["data"]["connections"] == 1
        reply = await c.request({"type": "control", "action": "pause"})
        assert reply["data"]["state"] == "paused"
        reply = await c.request({"type": "control", "action": "resume"})
        assert reply["data"]["state"] == "running"
        reply = await c.request({"type": "control", "action": "stop"})
        assert reply["data"]["state"] == "stopped"


async def test_invalid_transitions_and_parameters_change_nothing() -> None:
    """pause when idle and bad parameters are INVALID_COMMAND with the state; nothing changes."""
    async with make_server() as server, client(server) as c:
        reply = await c.request({"type": "control", "action": "pause"})
        assert reply["error"]["code"] == "INVALID_COMMAND"
        assert reply["error"]["details"]["state"] == "idle"
        reply = await c.request(
            {"type": "control", "action": "start", "parameters": {"population_size": 1}}
        )
        assert reply["error"]["code"] == "INVALID_COMMAND"
        assert "population_size" in reply["error"]["message"]
        reply = await c.request(
            {"type": "control", "action": "start", "parameters": {"warp_speed": 9}}
        )
        assert "warp_speed" in reply["error"]["message"]
        assert server.engine.state.value == "idle"
        assert server.engine.generation == -1
        assert server.engine.params.population_size == 20


async def test_viewer_may_watch_but_not_control() -> None:
    """A viewer subscribes and reads agents; control, command and uploads are UNAUTHORIZED."""
    async with make_server(autostart=True) as server, client(server, role="viewer") as v:
        ack = await v.request({"type": "subscribe", "channels": ["evolution"]})
        assert ack["type"] == "ack"
        await v.event("evolution_update")
        for request in (
            {"type": "control", "action": "stop"},
            {"type": "command", "cmd": "rollback", "args": {"generation": 1}},
        ):
            reply = await v.request(request)
            assert reply["error"]["code"] == "UNAUTHORIZED"
            assert "viewer" in reply["error"]["message"]
        await v.send(b'{"type":"agent_code","id":"u1"}\nlearning_rate = 0.01\n')
        reply = await v.wait_for(lambda m: isinstance(m, dict) and m.get("reply_to") == "u1")
        assert reply["error"]["code"] == "UNAUTHORIZED"
        assert server.engine.state.value == "running"


async def test_filters_apply_to_evolution_and_agents() -> None:
    """generation_min and fitness_min drop evolution and agent updates below them."""
    async with make_server() as server, client(server) as c:
        await c.request(
            {"type": "subscribe", "channel": "evolution", "filters": {"generation_min": 4}}
        )
        await c.request({"type": "subscribe", "channel": "agents", "filters": {"fitness_min": 0.5}})
        await c.request({"type": "control", "action": "start"})
        for _ in range(6):
            update = await c.event("evolution_update")
            assert update["data"]["generation"] >= 4
        # Agents this fit appear only after some generations (seed 3): wait for one, so
        # the check below cannot pass over an empty list.
        first_agent = await c.event("agent_update")
        agents = [m for m in c.buffer if isinstance(m, dict) and m["type"] == "agent_update"]
        agents.append(first_agent)
        assert all(a["data"]["fitness"] >= 0.5 for a in agents)
        reply = await c.request(
            {"type": "subscribe", "channel": "evolution", "filters": {"colour": 1}}
        )
        assert reply["error"]["code"] == "INVALID_COMMAND"
        assert "colour" in reply["error"]["message"]


async def test_unsubscribe_stops_delivery() -> None:
    """After unsubscribe, no more events of that channel arrive."""
    async with make_server(autostart=True) as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["evolution", "control"]})
        await c.event("evolution_update")
        ack = await c.request({"type": "unsubscribe", "channels": ["evolution"]})
        assert ack["data"]["channels"] == ["control"]
        c.buffer.clear()
        generation = server.engine.generation
        await eventually(lambda: server.engine.generation >= generation + 3)
        pong = await c.request({"type": "ping"})
        assert pong["type"] == "pong"
        assert not [m for m in c.buffer if m.get("type") == "evolution_update"]


async def test_get_agent_current_retired_and_unknown() -> None:
    """get_agent answers agent_update for current and retired agents; unknown: AGENT_NOT_FOUND."""
    async with make_server() as server, client(server, role="viewer") as c:
        list(server.engine.run(generations=5))
        reply = await c.request({"type": "get_agent", "agent_id": "agent-1"})
        assert reply["type"] == "agent_update"
        assert reply["data"]["status"] == "retired"
        best = server.engine.step().evolution.best_agent_id
        reply = await c.request({"type": "get_agent", "agent_id": best})
        assert reply["data"]["agent_id"] == best
        assert reply["data"]["status"] in {"elite", "violating", "evolving"}
        reply = await c.request({"type": "get_agent", "agent_id": "agent-424242"})
        assert reply["error"]["code"] == "AGENT_NOT_FOUND"


async def test_rollback_command_is_exact_and_announced(tmp_path: Any) -> None:
    """command rollback returns to the generation, announces log and alert; bad ones refused."""
    engine = Engine(seed=5, population_size=20, store=tmp_path / "runs.db")
    async with make_server(engine=engine) as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["alerts", "logs", "evolution"]})
        await c.request({"type": "control", "action": "start"})
        await c.event("evolution_update", generation=8)
        original = {}
        stop = await c.request({"type": "control", "action": "stop"})
        assert stop["data"]["state"] == "stopped"
        for row in server.engine.store.generation_rows(server.engine.run_id):
            original[row["generation"]] = row["best_fitness"]
        reply = await c.request({"type": "command", "cmd": "rollback", "args": {"generation": 4}})
        assert reply["type"] == "ack"
        assert reply["data"] == {"request": "command", "cmd": "rollback", "generation": 4,
                                 "branch": 1, "state": "stopped"}  # fmt: skip
        alert = await c.event("alert", kind="rollback")
        assert alert["severity"] == "warning"
        await c.wait_for(lambda m: m.get("type") == "log" and "Rolled back" in m["data"]["message"])
        await c.request({"type": "control", "action": "start"})
        replay = await c.event("evolution_update", generation=6, branch=1)
        assert replay["data"]["best_fitness"] == original[6]
        assert replay["data"]["branch"] == 1
        for bad, words in (
            ({"cmd": "rollback", "args": {"generation": 999}}, "999"),
            ({"cmd": "rollback", "args": {}}, "generation"),
            ({"cmd": "teleport", "args": {}}, "teleport"),
        ):
            reply = await c.request({"type": "command", **bad})
            assert reply["error"]["code"] == "INVALID_COMMAND"
            assert words in reply["error"]["message"]


async def test_binary_agent_code_both_ways() -> None:
    """get_agent_code answers a binary frame; an uploaded agent joins the population."""
    async with make_server() as server, client(server) as c:
        list(server.engine.run(generations=3))
        best = server.engine.step().evolution.best_agent_id
        await c.send(json.dumps({"type": "get_agent_code", "agent_id": best, "id": "g1"}))
        frame = await c.wait_for(lambda m: isinstance(m, bytes))
        meta_line, *code_lines = frame.decode().split("\n")  # as the spec's client does
        meta = json.loads(meta_line)
        assert meta["type"] == "agent_code"
        assert meta["agent_id"] == best
        assert meta["reply_to"] == "g1"
        code = "\n".join(code_lines)
        assert server.engine.parse_code(code) == server.engine.agent(best).genes

        # Upload in the spec's JS form: metadata JSON immediately followed by the code.
        upload = json.dumps({"type": "agent_code", "id": "u1"}).encode() + code.encode()
        await c.send(upload)
        ack = await c.wait_for(lambda m: isinstance(m, dict) and m.get("reply_to") == "u1")
        assert ack["type"] == "ack"
        new_id = ack["data"]["agent"]["agent_id"]
        server.engine.step()
        assert server.engine.agent(new_id).genes == server.engine.agent(best).genes

        too_big = b'{"type":"agent_code","id":"u2"}\n' + b"# x\n" * 3000
        await c.send(too_big)
        reply = await c.wait_for(lambda m: isinstance(m, dict) and m.get("reply_to") == "u2")
        assert reply["error"]["code"] == "CONSTRAINT_VIOLATION"
        evil = b'{"type":"agent_code","id":"u3"}\nimport os\n'
        await c.send(evil)
        reply = await c.wait_for(lambda m: isinstance(m, dict) and m.get("reply_to") == "u3")
        assert reply["error"]["code"] == "INVALID_COMMAND"
        assert "Import" in reply["error"]["message"]


async def test_bad_input_gets_clear_errors_and_the_run_goes_on() -> None:
    """Non-JSON, non-objects, unknown types, wrong types, NaN, deep nesting, bad UTF-8."""
    async with make_server(autostart=True) as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["evolution"]})
        before = server.engine.generation
        bad_inputs = [
            ("{not json", "not valid JSON"),
            ("[1, 2, 3]", "Expected `object`"),
            ('"just a string"', "Expected `object`"),
            ('{"type": "dance"}', "unknown or missing message type"),
            ('{"type": "get_agent", "agent_id": 5}', "Expected `str`"),
            ('{"type": "command", "cmd": "rollback", "args": {"generation": 1e400}}', ""),
            ('{"type": "ping", "timestamp": NaN}', "not valid JSON"),
            ('{"type": "ping", "x": ' + "[" * 5000 + "]" * 5000 + "}", "nests too deeply"),
            (
                '{"type": "command", "cmd": "rollback", "args": {"generation": 1'
                + "0" * 400
                + "}}",
                "generation",
            ),  # fmt: skip
        ]
        for text, words in bad_inputs:
            await c.send(text)
            reply = await c.wait_for(lambda m: isinstance(m, dict) and m["type"] == "error")
            assert reply["error"]["code"] == "INVALID_COMMAND", (text, reply)
            assert words in reply["error"]["message"], (text, reply)
        await c.send(b'{"type":"agent_code"}\n\xff\xfe bad utf-8')
        reply = await c.wait_for(lambda m: isinstance(m, dict) and m["type"] == "error")
        assert "UTF-8" in reply["error"]["message"]
        pong = await c.request({"type": "ping"})
        assert pong["type"] == "pong"
        await c.event("evolution_update", generation=before + 3)


async def test_engine_failure_is_reported_as_evolution_failed() -> None:
    """An engine failure reaches evolution subscribers as EVOLUTION_FAILED; serving goes on."""
    from tdevlab import Sphere

    class Breaks(Sphere):
        calls = 0

        def evaluate(self, genes: Any) -> Any:
            Breaks.calls += 1
            if Breaks.calls == 4:
                raise RuntimeError("simulator crashed")
            return super().evaluate(genes)

    engine = Engine(Breaks(dims=3), seed=1, population_size=10)
    async with make_server(engine=engine) as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["evolution", "control"]})
        await c.request({"type": "control", "action": "start"})
        error = await c.wait_for(lambda m: isinstance(m, dict) and m.get("type") == "error")
        assert error["error"]["code"] == "EVOLUTION_FAILED"
        assert "simulator crashed" in error["error"]["message"]
        assert error["error"]["details"]["generation"] == 3
        assert error["channel"] == "evolution"
        await c.event("control_update", state="failed")
        assert server.engine.state.value == "failed"
        reply = await c.request({"type": "control", "action": "start"})
        assert reply["data"]["state"] == "running"


async def test_tls_with_generated_certificate() -> None:
    """wss:// with a certificate made by the test."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with make_server(ssl=server_ctx) as server:
        assert server.url.startswith("wss://")
        token = server.token()
        async with connect(
            server.url, ssl=client_ctx, additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            c = Client(ws)
            assert (await c.request({"type": "ping"}))["type"] == "pong"


def test_graceful_shutdown_closes_1001_and_keeps_the_store(tmp_path: Any) -> None:
    """Stopping the server closes clients with 1001, ends the run, and the store is intact."""
    db = tmp_path / "runs.db"
    server = make_server(engine=Engine(seed=2, population_size=20, store=db), autostart=True)
    url = server.start()
    assert url.startswith("ws://127.0.0.1:")

    async def watch() -> int:
        async with connect(
            url, additional_headers={"Authorization": f"Bearer {server.token()}"}
        ) as ws:
            c = Client(ws)
            # The run started with the server: replay from its start (since 0), so that
            # generation 2 arrives even if it was produced before this subscription.
            await c.request(
                {"type": "subscribe", "channels": ["evolution"], "since": {"evolution": 0}}
            )
            await c.event("evolution_update", generation=2)
            await asyncio.get_running_loop().run_in_executor(None, server.stop)
            with pytest.raises(ConnectionClosed) as info:
                await drain(c)
            assert info.value.rcvd is not None
            return info.value.rcvd.code

    assert run(watch()) == 1001
    with SQLiteStore(db) as store:
        info = store.run_info(1)
        assert info.status == "stopped"
        assert info.last_generation is not None
        assert len(store.generation_rows(1)) == info.last_generation + 1


def test_port_zero_and_thread_mode_url() -> None:
    """start() on port 0 returns the real URL; stop() is idempotent."""
    server = make_server()
    url = server.start()
    assert server.port is not None
    assert url == f"ws://127.0.0.1:{server.port}/v1/evolution"
    server.stop()
    server.stop()


async def test_event_sequence_numbers_are_per_channel_and_gapless() -> None:
    """Every published event carries its channel's sequence number, counting up by one."""
    async with make_server(autostart=True) as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["evolution"]})
        seqs = [(await c.event("evolution_update"))["seq"] for _ in range(5)]
        assert seqs == list(range(seqs[0], seqs[0] + 5))


@pytest.mark.parametrize("interval", [-0.5, float("nan"), "fast"])
def test_generation_interval_must_be_seconds(interval: object) -> None:
    """A negative, NaN or non-numeric generation_interval is refused, naming it."""
    with pytest.raises(InvalidParameters, match="generation_interval"):
        EvolutionServer(Engine(), generation_interval=interval)  # type: ignore[arg-type]
