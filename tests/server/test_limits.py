"""Rate limits (spec: "Rate Limiting") on a real server, and the limiters without one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tdevlab.protocol.auth import TokenVerifier, issue_token
from tdevlab.protocol.envelope import Encoder
from tdevlab.protocol.limits import Limits, TokenBucket, UserRegistry
from tdevlab.protocol.session import Close, Send, Session
from tests.conftest import eventually
from tests.server.test_server import drain
from tests.serving import SECRET, Client, client, make_server

T0 = 1_700_000_000.0


def _session(registry: UserRegistry) -> Session:
    return Session(TokenVerifier(SECRET), Encoder(), now=T0, registry=registry)


def _codes(outcomes: list[Any]) -> list[str]:
    return [
        json.loads(o.data)["error"]["code"] if o.error else json.loads(o.data)["type"]
        for o in outcomes
        if isinstance(o, Send)
    ]


async def flood(c: Client, count: int) -> None:
    """Send ``count`` pings as fast as possible, then read until the connection closes."""
    for _ in range(count):
        await c.send({"type": "ping"})
    await drain(c)


def test_101st_message_within_a_second_is_rate_limited() -> None:
    """Without a socket: 100 messages at once pass (auth included), the 101st is RATE_LIMITED."""
    session = _session(UserRegistry(Limits()))
    token = issue_token(SECRET, "ada", "viewer", now=T0)
    replies = _codes(session.receive_text(json.dumps({"type": "auth", "token": token}), T0))
    for _ in range(99):
        replies += _codes(session.receive_text('{"type": "ping"}', T0 + 0.001))
    assert replies == ["ack"] + ["pong"] * 99
    assert _codes(session.receive_text('{"type": "ping"}', T0 + 0.002)) == ["RATE_LIMITED"]
    # A token bucket: 100 per second come back at a steady rate.
    assert _codes(session.receive_text('{"type": "ping"}', T0 + 0.015)) == ["pong"]
    assert _codes(session.receive_text('{"type": "ping"}', T0 + 0.016)) == ["RATE_LIMITED"]


def test_token_bucket_refills_and_caps() -> None:
    """A bucket starts full, refills at its rate, and never holds more than its capacity."""
    bucket = TokenBucket(rate=10.0, capacity=5.0, now=0.0)
    assert all(bucket.take(0.0) for _ in range(5))
    assert not bucket.take(0.0)
    assert bucket.take(0.1)
    assert not bucket.take(0.1)
    assert bucket.take(100.0, 5.0)
    assert not bucket.take(100.0)


def test_limits_are_validated() -> None:
    """Non-positive limits are refused with the limit named."""
    from tdevlab import InvalidParameters

    with pytest.raises(InvalidParameters, match="connections_per_user"):
        Limits(connections_per_user=0)


@pytest.mark.slow
async def test_burst_over_the_rate_gets_rate_limited_and_connection_stays() -> None:
    """A burst past 100 messages/second gets RATE_LIMITED replies; the connection stays."""
    async with make_server() as server, client(server) as c:
        for i in range(150):
            await c.send({"type": "ping", "id": f"p{i}"})
        replies = [
            await c.wait_for(lambda m, i=i: m.get("reply_to") == f"p{i}") for i in range(150)
        ]
        limited = [r for r in replies if r["type"] == "error"]
        assert limited, "150 messages at once must exceed 100/s"
        assert all(r["error"]["code"] == "RATE_LIMITED" for r in limited)
        assert len(limited) <= 150 - 99
        # The bucket refills at 100/s on the server's wall clock; a slower machine only
        # waits longer.
        await asyncio.sleep(1.1)  # the bucket refills: a second later it is full again
        assert (await c.request({"type": "ping"}))["type"] == "pong"


async def test_flooding_far_past_the_limit_closes_1008() -> None:
    """A client that keeps flooding is closed with 1008 and a reason."""
    async with make_server() as server, client(server) as c:
        with pytest.raises(ConnectionClosed) as info:
            await flood(c, 2000)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1008
        assert "flooding" in info.value.rcvd.reason


@pytest.mark.slow
async def test_eleventh_connection_of_a_user_is_refused() -> None:
    """The 11th concurrent connection of a user: RATE_LIMITED + 1013, or HTTP 429 with a header."""
    async with make_server() as server:
        token = server.token("ada", "viewer")
        sockets = [await connect(server.url) for _ in range(11)]
        try:
            clients = [Client(ws) for ws in sockets]
            for c in clients[:10]:
                assert (await c.request({"type": "auth", "token": token}))["type"] == "ack"
            reply = await clients[10].request({"type": "auth", "token": token})
            assert reply["error"]["code"] == "RATE_LIMITED"
            with pytest.raises(ConnectionClosed) as info:
                await drain(clients[10])
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1013
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.url, additional_headers={"Authorization": f"Bearer {token}"})
            assert refused.value.response.status_code == 429
            # Another user is not affected; a freed slot can be used again.
            async with client(server, user="bob"):
                pass
            await sockets[0].close()
            await eventually(lambda: server.registry.connections.get("ada") == 9)
            async with client(server, user="ada", role="viewer", header=True) as again:
                assert (await again.request({"type": "ping"}))["type"] == "pong"
        finally:
            for ws in sockets:
                await ws.close()


async def test_data_rate_is_enforced_across_a_users_connections() -> None:
    """10 MB/minute per user, counted across connections: past it, RATE_LIMITED."""
    async with make_server() as server, client(server) as a, client(server) as b:
        pad = "x" * (900 * 1024)
        codes = []
        for i in range(14):
            c = a if i % 2 else b
            reply = await c.request({"type": "ping", "pad": pad})
            codes.append(reply["type"] if reply["type"] != "error" else reply["error"]["code"])
        assert codes[:10] == ["pong"] * 10
        assert "RATE_LIMITED" in codes[10:]
        refused = await b.request({"type": "ping", "pad": pad})
        assert "bytes per minute" in refused["error"]["message"]
        # Small messages still fit in what is left... or wait for the refill.
        async with client(server, user="carol") as other:
            assert (await other.request({"type": "ping", "pad": pad}))["type"] == "pong"


async def test_oversized_frame_closes_1009() -> None:
    """A frame over 1 MiB closes the connection with 1009."""
    async with make_server() as server, client(server) as c:
        await c.send({"type": "ping", "pad": "x" * (1024 * 1024 + 10)})
        with pytest.raises(ConnectionClosed) as info:
            await drain(c)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1009


def test_connection_count_is_released_by_the_session() -> None:
    """Closing a session frees its user's connection slot (no leak)."""
    registry = UserRegistry(Limits(connections_per_user=1))
    first = _session(registry)
    token = issue_token(SECRET, "ada", "viewer", now=T0)
    assert _codes(first.receive_text(json.dumps({"type": "auth", "token": token}), T0)) == ["ack"]
    second = _session(registry)
    out = second.receive_text(json.dumps({"type": "auth", "token": token}), T0)
    assert _codes(out) == ["RATE_LIMITED"]
    assert any(isinstance(o, Close) and o.code == 1013 for o in out)
    first.close()
    third = _session(registry)
    assert _codes(third.receive_text(json.dumps({"type": "auth", "token": token}), T0)) == ["ack"]
