"""Server contract details over real sockets: compression, fan-out cost, metrics, filters,
keepalive and the control channel."""

from __future__ import annotations

import asyncio
import statistics
import time
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

import psutil
import pytest
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from tdevlab import Engine
from tdevlab.engine.events import AgentUpdate, EvolutionUpdate
from tdevlab.protocol.limits import Limits
from tests.conftest import eventually, timeout
from tests.serving import TIMEOUT, Client, client, make_server, stalled_client

# -- compression -------------------------------------------------------------------------


async def test_compression_is_off_by_default() -> None:
    """A client offering permessage-deflate gets no extension from a default server."""
    async with make_server() as server, client(server) as c:
        assert c.ws.response is not None
        assert "Sec-WebSocket-Extensions" not in c.ws.response.headers
        assert c.ws.protocol.extensions == []
        (connection,) = server.hub.connections
        assert connection.raw  # frames are built once and written as they are


async def test_compression_when_configured_still_delivers_evolution_updates() -> None:
    """compression="deflate" negotiates permessage-deflate; evolution updates arrive and parse."""
    async with make_server(compression="deflate") as server, client(server) as c:
        assert c.ws.response is not None
        assert "permessage-deflate" in c.ws.response.headers["Sec-WebSocket-Extensions"]
        assert [type(e) for e in c.ws.protocol.extensions] == [PerMessageDeflate]
        (connection,) = server.hub.connections
        assert not connection.raw
        await c.request({"type": "subscribe", "channels": ["evolution"]})
        await c.request({"type": "control", "action": "start"})
        updates = [await c.event("evolution_update") for _ in range(5)]
        assert [u["data"]["generation"] for u in updates] == [0, 1, 2, 3, 4]
        assert all(isinstance(u["data"]["best_fitness"], float) for u in updates)
        seqs = [u["seq"] for u in updates]
        assert seqs == list(range(seqs[0], seqs[0] + 5))


# -- fan-out -----------------------------------------------------------------------------


async def test_fan_out_encodes_per_filter_outcome_not_per_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 subscribers over 2 filter outcomes: each evolution event is encoded and framed at
    most twice, while every subscriber gets exactly what its filter accepts."""
    generations, generation_min = 8, 4
    async with make_server() as server, AsyncExitStack() as stack:
        clients: list[Client] = []
        for i in range(20):
            c = await stack.enter_async_context(client(server, user=f"u{i}", role="viewer"))
            filters = {"generation_min": generation_min} if i % 2 else {}
            await c.request({"type": "subscribe", "channel": "evolution", "filters": filters})
            clients.append(c)

        encodes, frames = [0], [0]
        encode, serialize = server.encoder.encode, Frame.serialize

        def counting_encode(message: dict[str, Any]) -> bytes:
            encodes[0] += 1
            return encode(message)

        def counting_serialize(frame: Frame, **kwargs: Any) -> bytes:
            frames[0] += 1
            return serialize(frame, **kwargs)

        # Per published evolution event: (generation, encodes, frames built) during it.
        # publish() is synchronous: whatever it encodes or frames is for that event.
        per_event: list[tuple[int, int, int]] = []
        publish = server.hub.publish

        def counting_publish(channel: str, *args: Any, **kwargs: Any) -> bytes:
            before = encodes[0], frames[0]
            payload = publish(channel, *args, **kwargs)
            if channel == "evolution":
                counts = encodes[0] - before[0], frames[0] - before[1]
                per_event.append((kwargs["generation"], *counts))
            return payload

        monkeypatch.setattr(server.encoder, "encode", counting_encode)
        monkeypatch.setattr(Frame, "serialize", counting_serialize)
        monkeypatch.setattr(server.hub, "publish", counting_publish)

        await asyncio.to_thread(lambda: list(server.engine.run(generations=generations)))
        for i, c in enumerate(clients):
            received = []
            while not received or received[-1] < generations - 1:
                received.append((await c.event("evolution_update"))["data"]["generation"])
            first = generation_min if i % 2 else 0
            assert received == list(range(first, generations)), i

        assert [g for g, _, _ in per_event] == list(range(generations))
        outcomes = 2  # with and without the filter
        for generation, encoded, framed in per_event:
            assert 1 <= encoded <= outcomes, (generation, encoded)
            assert 1 <= framed <= outcomes, (generation, framed)


async def test_a_stalled_reader_does_not_slow_the_engine_or_other_clients() -> None:
    """While one client reads nothing and the server holds frames for it, generations go on
    and a reading client gets every evolution update, in order."""

    async def follow(reader: Client, count: int) -> None:
        """Read ``count`` evolution updates, checking they come without gaps."""
        last = (await reader.event("evolution_update"))["data"]["generation"]
        for _ in range(count):
            update = await reader.event("evolution_update")
            assert update["data"]["generation"] == last + 1
            last = update["data"]["generation"]

    async with (
        make_server(generation_interval=0.01, autostart=True) as server,
        client(server, user="reader") as reader,
    ):
        await reader.request({"type": "subscribe", "channels": ["evolution"]})
        await follow(reader, 10)
        channels = ["evolution", "agents", "logs", "alerts", "control", "metrics"]
        async with stalled_client(server, channels) as stalled:
            transport = stalled.ws.transport
            assert transport is not None
            # The client really is behind: the server holds frames it could not send.
            await eventually(lambda: transport.get_write_buffer_size() > 0)
            # A blocked engine or a blocked fan-out would stop here (bounded by TIMEOUT).
            await follow(reader, 50)
            assert transport.get_write_buffer_size() > 0
            assert not stalled.aborted


# -- metrics -----------------------------------------------------------------------------


@pytest.mark.slow
async def test_metrics_arrive_at_the_configured_interval() -> None:
    """With metrics_interval=0.2, metrics events are stamped at least 0.2 s apart, and
    typically 0.2 s (not the 1 s default): the envelope times, not arrival times, so a
    loaded machine delaying delivery cannot make the test fail."""
    async with make_server(metrics_interval=0.2) as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["metrics"]})
        stamps = [datetime.fromisoformat((await c.event("metrics"))["timestamp"]) for _ in range(6)]
        gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
        # asyncio's sleep never ends early; the stamps have millisecond precision.
        assert min(gaps) >= 0.199, gaps
        # Not the 1 s default (the slack is for a loaded machine's late wake-ups).
        assert statistics.median(gaps) < 0.9, gaps


@pytest.mark.slow
async def test_metrics_measure_this_process_cpu_and_memory() -> None:
    """memory_usage is psutil's memory_percent of the server process; cpu_usage matches the
    process's CPU time over the same intervals."""
    process = psutil.Process()  # the server runs in this process
    async with make_server(metrics_interval=0.2, autostart=True) as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["metrics"]})
        await eventually(lambda: server.engine.generation > 10)  # the engine keeps it busy
        await c.event("metrics")
        cpu_start, wall_start = sum(process.cpu_times()[:2]), time.monotonic()
        samples = [(await c.event("metrics"))["data"] for _ in range(4)]
        cpu_end, wall_end = sum(process.cpu_times()[:2]), time.monotonic()
        memory = process.memory_percent()

        last = samples[-1]["memory_usage"]
        assert last > 0
        assert last == pytest.approx(memory, abs=max(0.05, 0.1 * memory))
        measured = 100.0 * (cpu_end - cpu_start) / (wall_end - wall_start)
        reported = sum(s["cpu_usage"] for s in samples) / len(samples)
        assert measured > 10
        assert reported == pytest.approx(measured, abs=15 + 0.2 * measured)


async def test_metrics_count_requests_and_their_latency() -> None:
    """After pings, the next metrics event reports requests_per_second > 0, no errors."""
    async with make_server(metrics_interval=0.2) as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["metrics"]})
        for _ in range(5):
            assert (await c.request({"type": "ping"}))["type"] == "pong"
        c.buffer.clear()  # metrics sampled before the last ping was counted
        # The last pong was queued together with its request being counted, so any
        # metrics event after it comes from a sample that includes that request.
        data = (await c.event("metrics"))["data"]
        assert data["requests_per_second"] > 0
        assert data["average_latency_ms"] > 0
        assert data["error_rate"] == 0.0
        assert data["connections"] == 1


async def test_metrics_count_messages_dropped_for_a_cut_off_reader() -> None:
    """dropped_messages is 0, then >= 1 once a stalled reader was cut off at its budget."""
    limits = Limits(outbound_budget_bytes=16 * 1024)
    async with (
        make_server(metrics_interval=0.2, autostart=True, limits=limits) as server,
        client(server, user="watcher") as c,
    ):
        await c.request({"type": "subscribe", "channels": ["metrics"]})
        assert (await c.event("metrics"))["data"]["dropped_messages"] == 0
        async with stalled_client(server, ["evolution", "agents", "logs"]) as stalled:
            # The running engine soon overflows the stalled client's small budget.
            metrics = await c.wait_for(
                lambda m: m.get("type") == "metrics" and m["data"]["dropped_messages"] >= 1
            )
            assert stalled.aborted
            assert stalled.dropped >= 1
        # Counted when the cut-off connection was let go.
        assert metrics["data"]["connections"] == 1


# -- filters -----------------------------------------------------------------------------


async def test_fitness_min_on_evolution_and_generation_min_on_agents() -> None:
    """fitness_min filters evolution updates by best_fitness and generation_min filters agent
    updates by generation: exactly the events a twin engine says pass arrive."""
    fitness_min, generation_min, last = 0.45, 5, 12

    twin, events = Engine(seed=3, population_size=20), []
    twin.subscribe(events.append)
    list(twin.run(generations=last + 1))
    best = {e.generation: e.best_fitness for e in events if isinstance(e, EvolutionUpdate)}
    expected_evolution = [g for g, f in best.items() if f >= fitness_min]
    expected_agents = [
        e.agent_id for e in events if isinstance(e, AgentUpdate) and e.generation >= generation_min
    ]
    # The thresholds must cut something off, and let something through.
    assert 0 < len(expected_evolution) < len(best)
    assert expected_agents
    assert any(isinstance(e, AgentUpdate) and e.generation < generation_min for e in events)
    async with make_server() as server, client(server) as c:
        await c.request(
            {
                "type": "subscribe",
                "channel": "evolution",
                "filters": {"fitness_min": fitness_min},
            }
        )
        await c.request(
            {
                "type": "subscribe",
                "channel": "agents",
                "filters": {"generation_min": generation_min},
            }
        )
        await c.request({"type": "control", "action": "start"})
        evolution: list[int] = []
        while not evolution or evolution[-1] < last + 2:
            update = await c.event("evolution_update")
            assert update["data"]["best_fitness"] >= fitness_min
            evolution.append(update["data"]["generation"])
        # Every agent update of generation <= last was published before generation
        # last + 2's evolution update, on this same connection.
        agents = [
            m["data"]
            for m in c.buffer
            if m.get("type") == "agent_update" and m["data"]["generation"] <= last
        ]
        assert [g for g in evolution if g <= last] == expected_evolution
        assert [a["agent_id"] for a in agents] == expected_agents
        assert all(a["generation"] >= generation_min for a in agents)


# -- keepalive ---------------------------------------------------------------------------


async def test_auth_timeout_and_keepalive_defaults() -> None:
    """By default: 10 s to authenticate, keepalive pings every 20 s with a 20 s timeout."""
    # make_server passes neither option: these are EvolutionServer's defaults.
    async with make_server() as server, client(server):
        assert server.auth_timeout == 10.0
        assert server.ping_interval == 20.0
        assert server.ping_timeout == 20.0
        (connection,) = server.hub.connections
        assert connection.session.auth_timeout == 10.0
        # websockets applies them to each connection.
        assert connection.ws.ping_interval == 20.0
        assert connection.ws.ping_timeout == 20.0


async def test_client_that_never_answers_pings_is_closed_by_keepalive() -> None:
    """A sans-I/O client that never sends pongs is closed with 1011 after the ping timeout;
    a normal client on the same server stays open."""
    async with (
        make_server(ping_interval=0.2, ping_timeout=timeout(0.3)) as server,
        client(server) as c,
    ):
        protocol = ClientProtocol(parse_uri(server.url))
        request = protocol.connect()
        request.headers["Authorization"] = f"Bearer {server.token('mute', 'viewer')}"
        protocol.send_request(request)
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"".join(protocol.data_to_send()))
        received: list[Any] = []
        try:
            async with asyncio.timeout(TIMEOUT):
                while data := await reader.read(65536):
                    protocol.receive_data(data)
                    received.extend(protocol.events_received())
                    # Discarded, never written: the automatic pongs among them.
                    protocol.data_to_send()
        finally:
            writer.close()
        protocol.receive_eof()

        assert isinstance(received[0], Response)
        assert received[0].status_code == 101
        assert any(isinstance(e, Frame) and e.opcode is Opcode.PING for e in received)
        assert protocol.close_rcvd is not None
        assert protocol.close_rcvd.code == 1011
        assert "keepalive ping timeout" in protocol.close_rcvd.reason
        # The configured interval and timeout (0.5 s), not the 20 s + 20 s defaults: the
        # close came within TIMEOUT, after pings (the first default ping is due at 20 s).
        # The answering client was pinged just as often and is still served.
        assert c.ws.state is State.OPEN
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        assert len(server.hub.connections) == 1


# -- control channel ---------------------------------------------------------------------


async def test_every_state_change_is_published_on_the_control_channel() -> None:
    """start, pause, resume, stop: one control_update each, with the new state, in order."""
    async with make_server() as server, client(server) as c:
        await c.request({"type": "subscribe", "channels": ["control"]})
        states = []
        for action in ("start", "pause", "resume", "stop"):
            reply = await c.request({"type": "control", "action": action})
            states.append(reply["data"]["state"])
        assert states == ["running", "paused", "running", "stopped"]
        updates = []
        while not updates or updates[-1]["data"]["state"] != "stopped":
            updates.append(await c.event("control_update"))
        # A round trip after the last change: anything else published is here by now.
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        assert not [m for m in c.buffer if m.get("type") == "control_update"]

        assert [u["data"]["state"] for u in updates] == states
        assert [u["data"]["action"] for u in updates] == ["start", "pause", "resume", "stop"]
        assert [u["data"]["previous_state"] for u in updates] == ["idle", *states[:-1]]
        assert all(u["channel"] == "control" for u in updates)
        seqs = [u["seq"] for u in updates]
        assert seqs == list(range(seqs[0], seqs[0] + 4))
        assert server.engine.state.value == "stopped"
