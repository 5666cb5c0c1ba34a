"""Gap-free recovery: resubscribing with the last sequence numbers replays what was missed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tdevlab import Engine
from tdevlab.protocol.limits import Limits
from tests.conftest import eventually, run, timeout
from tests.serving import (
    TIMEOUT,
    Client,
    client,
    connection_of,
    make_server,
    operator_token,
    serve_store,
)


async def test_resubscribe_with_since_replays_missed_events_in_order() -> None:
    """A client that reconnects with since/epochs gets every missed event once, then live."""
    # History deep enough for what happens while the client is away (5 logs a
    # generation), and an outbound budget far smaller than the replay: a replay is
    # streamed as the client reads, not cut off.
    limits = Limits(outbound_budget_bytes=64 * 1024)
    async with make_server(autostart=True, history=50_000, limits=limits) as server:
        seen: dict[str, list[int]] = {"evolution": [], "logs": []}
        async with client(server) as c:
            ack = await c.request({"type": "subscribe", "channels": ["evolution", "logs"]})
            epochs = ack["data"]["epochs"]
            while len(seen["evolution"]) < 3:
                m = await c.wait_for(lambda m: m.get("channel") in seen)
                seen[m["channel"]].append(m["seq"])
        gone_at = server.engine.generation
        # Generations go on while the client is away, until the logs it missed are more
        # bytes than the outbound budget.
        await eventually(lambda: server.engine.generation > gone_at + 3)
        budget_logs = limits.outbound_budget_bytes // 200
        await eventually(lambda: server.hub.seq["logs"] - seen["logs"][-1] > budget_logs)
        async with client(server) as c:
            since = {ch: seqs[-1] for ch, seqs in seen.items() if seqs}
            ack = await c.request(
                {
                    "type": "subscribe",
                    "channels": ["evolution", "logs"],
                    "since": since,
                    "epochs": epochs,
                }  # fmt: skip
            )
            assert ack["data"]["recovered"] == dict.fromkeys(since, True)
            missed = ack["data"]["seq"]["logs"] - since["logs"]
            assert missed * 200 > limits.outbound_budget_bytes  # bytes to replay
            target = server.engine.generation + 2
            while True:
                m = await c.wait_for(lambda m: m.get("channel") in seen)
                seen[m["channel"]].append(m["seq"])
                if m["channel"] == "evolution" and m["data"]["generation"] >= target:
                    break
        for channel, seqs in seen.items():
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), channel


async def test_history_beyond_memory_is_reported_unrecovered_or_served_from_the_store(
    tmp_path: Path,
) -> None:
    """Past the in-memory history: logs say recovered=false; evolution comes from the store."""
    engine = Engine(seed=1, population_size=20, store=tmp_path / "runs.db")
    async with make_server(engine=engine, history=5) as server, client(server) as c:
        ack = await c.request({"type": "subscribe", "channels": ["evolution", "logs"]})
        epochs = ack["data"]["epochs"]
        assert epochs["evolution"].startswith("run-1-")
        await asyncio.to_thread(lambda: list(server.engine.run(generations=20)))
        await eventually(lambda: server.hub.seq["evolution"] == 20)  # all 20 published
        async with client(server) as late:
            ack = await late.request(
                {
                    "type": "subscribe",
                    "channels": ["evolution", "logs"],
                    "since": {"evolution": 2, "logs": 2},
                    "epochs": epochs,
                }  # fmt: skip
            )
            assert ack["data"]["recovered"] == {"evolution": True, "logs": False}
            updates = [await late.event("evolution_update") for _ in range(18)]
            assert [u["seq"] for u in updates] == list(range(3, 21))
            assert [u["data"]["generation"] for u in updates] == list(range(2, 20))
            stale = await late.request(
                {
                    "type": "subscribe",
                    "channel": "logs",
                    "since": {"logs": 1},
                    "epochs": {"logs": "another-server"},
                }  # fmt: skip
            )
            assert stale["data"]["recovered"] == {"logs": False}


async def test_a_generation_replayed_from_the_store_carries_the_data_it_had_live(
    tmp_path: Path,
) -> None:
    """An evolution_update served from the store has the same data as when it was live
    (a measure the strategy does not report is left out, not sent as null)."""
    engine = Engine(seed=1, population_size=20, store=tmp_path / "runs.db")
    async with make_server(engine=engine, history=1) as server, client(server) as c:
        ack = await c.request({"type": "subscribe", "channels": ["evolution"]})
        await asyncio.to_thread(lambda: list(server.engine.run(generations=3)))
        live = [(await c.event("evolution_update"))["data"] for _ in range(3)]
        async with client(server) as late:
            await late.request(
                {
                    "type": "subscribe",
                    "channels": ["evolution"],
                    "since": {"evolution": 0},
                    "epochs": ack["data"]["epochs"],
                }  # fmt: skip
            )
            replayed = [(await late.event("evolution_update"))["data"] for _ in range(3)]
    assert "front_size" not in live[0]
    assert replayed == live


@pytest.mark.slow
def test_sigkill_and_restart_on_the_same_store_loses_no_generation(tmp_path: Path) -> None:
    """Server killed mid-run, restarted on its database: the client ends with every
    generation exactly once, in order."""
    db = tmp_path / "runs.db"
    generations: list[int] = []
    seqs: list[int] = []

    async def watch(url: str, token: str, since: dict[str, int] | None, until: int,
                    start: bool) -> dict[str, Any]:  # fmt: skip
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            c = Client(ws)
            request: dict[str, Any] = {"type": "subscribe", "channels": ["evolution"]}
            if since:
                request["since"] = since
            ack = await c.request(request)
            if start:
                reply = await c.request({"type": "control", "action": "start"})
                assert reply["data"]["state"] == "running", reply
            while True:
                try:
                    m = await c.event("evolution_update")
                except ConnectionClosed:
                    return ack
                generations.append(m["data"]["generation"])
                seqs.append(m["seq"])
                if m["data"]["generation"] >= until:
                    return ack

    token = operator_token()
    with serve_store(db, "--autostart") as (proc, url):
        run(watch(url, token, {"evolution": 0}, 8, False))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    killed_at = generations[-1]

    with serve_store(db) as (proc, url):  # resumes the store's run; not started yet
        ack = run(watch(url, token, {"evolution": seqs[-1]}, killed_at + 10, True))
        assert ack["data"]["recovered"] == {"evolution": True}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=timeout(30)) == 0
    assert generations == list(range(generations[-1] + 1))
    assert seqs == list(range(1, len(seqs) + 1))
    assert os.path.getsize(db) > 0
    assert json.dumps(ack)


@pytest.mark.slow
async def test_a_pong_overtakes_a_long_replay() -> None:
    """A ping sent right after a subscribe that replays ~20 MB is answered while the replay
    still streams: the pong belongs to no channel and does not wait behind it."""
    async with make_server(history=20_000, metrics_interval=0) as server:
        epoch = server.hub.epochs["logs"]
        for _ in range(20_000):
            server.hub.publish("logs", "log", {"generation": 0, "message": "x" * 1000})
        async with client(server) as c:
            await c.send(
                {
                    "type": "subscribe",
                    "channels": ["logs"],
                    "since": {"logs": 0},
                    "epochs": {"logs": epoch},
                    "id": "sub",
                }  # fmt: skip
            )
            await c.send({"type": "ping", "id": "p", "timestamp": "2026-01-01T00:00:00Z"})
            seqs: list[int] = []
            async with asyncio.timeout(TIMEOUT):
                while (message := await c.receive()).get("type") != "pong":
                    if message.get("type") == "log":
                        seqs.append(message["seq"])
            # The pong went out between two replay pieces (256 KB, ~250 of these logs),
            # behind at most what was already in the socket buffers.
            assert len(seqs) < 5_000
            # And the replay goes on, complete and in order.
            await _read_logs(c, seqs, 20_000)
            assert seqs == list(range(1, 20_001))


async def test_live_events_piling_up_behind_a_slow_replay_do_not_cut_the_client_off() -> None:
    """A replay the client reads slowly, while more than the outbound budget of live events
    piles up behind it: the client gets the replay, then every live event, in order,
    and is not cut off (it was, at the budget, and its next replay was larger still)."""
    limits = Limits(outbound_budget_bytes=256 * 1024)
    async with make_server(history=5_000, metrics_interval=0, limits=limits) as server:
        epoch = server.hub.epochs["logs"]
        for _ in range(3_000):  # ~3 MB of history to replay
            server.hub.publish("logs", "log", {"generation": 0, "message": "x" * 1000})
        sock = await _narrow_socket(server)
        headers = {"Authorization": f"Bearer {server.token('slow', 'viewer')}"}
        async with connect(
            server.url, sock=sock, additional_headers=headers, open_timeout=TIMEOUT
        ) as ws:
            c = Client(ws)
            await c.send(
                {
                    "type": "subscribe",
                    "channels": ["logs"],
                    "since": {"logs": 0},
                    "epochs": {"logs": epoch},
                }  # fmt: skip
            )
            ws.transport.pause_reading()  # the replay stalls on the narrow window
            (connection,) = server.hub.connections
            await eventually(lambda: connection.held is not None)  # the replay has begun
            for _ in range(1_000):  # ~1 MB of live events: 4x the budget, held
                server.hub.publish("logs", "log", {"generation": 1, "message": "y" * 1000})
                await asyncio.sleep(0)  # lets the server's loop write what it can
            assert not connection.aborted
            assert connection.held is not None  # still behind the replay
            ws.transport.resume_reading()
            seqs: list[int] = []
            await _read_logs(c, seqs, 4_000)
            assert seqs == list(range(1, 4_001))
            assert not connection.aborted
            assert connection.held is None  # caught up: live frames go straight out


def test_a_replay_on_a_compressed_connection_with_a_backlog_keeps_the_server_serving() -> None:
    """With compression (frames go through websockets' send), a resubscribe with ``since``
    from a client that has a backlog queued: the server goes on serving others (the replay
    loop once spun forever there, freezing the server's event loop)."""
    server = make_server(compression="deflate", history=100, metrics_interval=0)
    url = server.start()  # its own thread: a frozen server must not freeze this test
    answered = False

    async def scenario() -> None:
        nonlocal answered
        sock = await _narrow_socket(server)
        headers = {"Authorization": f"Bearer {server.token('slow', 'viewer')}"}
        async with connect(
            url,
            sock=sock,
            additional_headers=headers,
            open_timeout=TIMEOUT,
            close_timeout=timeout(0.2),
        ) as ws:
            slow = Client(ws)
            await slow.request({"type": "subscribe", "channels": ["logs"]})
            transport = connection_of(server, "slow").ws.transport
            assert transport is not None
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            ws.transport.pause_reading()
            loop = server._loop
            assert loop is not None
            for _ in range(10):  # ~400 KB of incompressible text queued for the slow client
                data = {"generation": 0, "message": os.urandom(20_000).hex()}
                asyncio.run_coroutine_threadsafe(_publish(server, data), loop).result(TIMEOUT)
            await slow.send({"type": "subscribe", "channels": ["logs"], "since": {"logs": 0}})
            async with client(server, user="other") as other:
                pong = await asyncio.wait_for(other.request({"type": "ping"}), TIMEOUT)
                answered = pong["type"] == "pong"
            ws.transport.abort()  # a polite close would wait behind the unread frames

    try:
        run(scenario())
    finally:
        if answered:
            server.stop()
    assert answered


async def _publish(server: Any, data: dict[str, Any]) -> None:
    server.hub.publish("logs", "log", data)


async def _narrow_socket(server: Any) -> socket.socket:
    """A socket connected to ``server`` with a small receive buffer (a narrow TCP window):
    the server's frames wait on its side as soon as the test stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # set before connecting
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    return sock


async def _read_logs(c: Client, seqs: list[int], until: int) -> None:
    """Append the ``seq`` of each log event ``c`` receives until ``seqs`` holds ``until``."""
    async with asyncio.timeout(timeout(60)):  # megabytes: many seconds on a loaded machine
        while len(seqs) < until:
            message = await c.receive()
            if message.get("type") == "log":
                seqs.append(message["seq"])
