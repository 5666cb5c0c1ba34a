"""What an attacker on loopback tried, on a real server: unauthenticated floods, echoed input,
odd tokens, and a server that verifies RS256 asked to sign.

Only the defaults are used (no new options), so each test states the documented limit.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

from tdevlab.exceptions import InvalidParameters
from tdevlab.protocol.auth import TokenVerifier
from tdevlab.protocol.limits import Limits
from tests.conftest import timeout
from tests.serving import SECRET, TIMEOUT, Client, client, make_server

KIB = 1024
PRE_AUTH_FRAME = 16 * KIB  # documented: Limits.pre_auth_frame_bytes
PRE_AUTH_BYTES = 64 * KIB  # documented: Limits.pre_auth_bytes
PER_ADDRESS = 32  # documented: Limits.unauthenticated_per_address
ECHO = 256  # documented: the most bytes of a client string a reply repeats
MAX_REPLY = 64 * KIB  # documented: no reply is larger


async def close_code(ws: ClientConnection) -> int:
    """Read until the server closes; return the close code it sent (1006 if none)."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006


async def replies(ws: ClientConnection, count: int) -> list[bytes]:
    """The next ``count`` frames, raw (their size matters here)."""
    out = []
    async with asyncio.timeout(TIMEOUT):
        for _ in range(count):
            frame = await ws.recv(decode=False)
            out.append(frame)
    return out


async def metric(c: Client, name: str, at_least: int) -> int:
    """Wait for a metrics event whose ``name`` reached ``at_least``; return it."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            event = await c.event("metrics")
            value = event["data"].get(name)
            if value is not None and value >= at_least:
                return int(value)


# -- 1. pre-auth limits ----------------------------------------------------------------------


async def test_unauthenticated_frame_over_16_kib_is_closed_1009() -> None:
    """Before auth a frame over 16 KiB closes the connection with 1009; rejections are counted."""
    async with make_server(metrics_interval=0.1) as server, client(server) as watcher:
        await watcher.request({"type": "subscribe", "channel": "metrics"})
        async with connect(server.url, max_size=None) as ws:
            padded = json.dumps({"type": "ping", "id": 1, "pad": "x" * PRE_AUTH_FRAME})
            await ws.send(padded)
            assert await close_code(ws) == 1009
        assert await metric(watcher, "rejected_connections", 1) >= 1


async def test_after_auth_the_full_frame_limit_applies() -> None:
    """The same frame is fine once authenticated (by message or by header): a pong comes back."""
    async with make_server() as server:
        for header in (False, True):
            async with client(server, header=header) as c:
                padded = {"type": "ping", "pad": "x" * (512 * KIB)}
                assert (await c.request(padded))["type"] == "pong"


async def test_unauthenticated_bytes_over_64_kib_are_closed_1008() -> None:
    """Small frames before auth add up: past 64 KiB in all the connection is closed with 1008."""
    async with make_server() as server, connect(server.url) as ws:
        frame = json.dumps({"type": "ping", "pad": "x" * (15 * KIB)})
        try:
            for _ in range(PRE_AUTH_BYTES // (15 * KIB) + 1):
                await ws.send(frame)
        except ConnectionClosed:
            pass
        assert await close_code(ws) == 1008


async def test_unauthenticated_connections_per_address_are_capped() -> None:
    """32 unauthenticated connections from one address are held; the 33rd is refused (429),
    and an authenticated client still gets in."""
    async with make_server() as server:
        held = [await connect(server.url) for _ in range(PER_ADDRESS)]
        try:
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.url, open_timeout=TIMEOUT)
            assert refused.value.response.status_code == 429
            async with client(server, header=True) as c:
                assert (await c.request({"type": "ping"}))["type"] == "pong"
            # One of them authenticates: its place is free again.
            await held[0].send(json.dumps({"type": "auth", "token": server.token()}))
            assert json.loads(await held[0].recv())["type"] == "ack"
            extra = await connect(server.url, open_timeout=TIMEOUT)
            await extra.close()
        finally:
            for ws in held:
                await ws.close()


# -- 3. echo caps ----------------------------------------------------------------------------


async def test_replies_repeat_at_most_256_bytes_of_client_input() -> None:
    """Huge ids, agent ids, names and timestamps come back cut or refused: replies < 64 KiB,
    no ``reply_to`` over 256 bytes, the connection stays open."""
    long_id = "i" * 300
    requests: list[dict[str, Any]] = [
        {"type": "get_agent", "agent_id": "a" * 600_000, "id": "r1"},
        {"type": "ping", "id": long_id},
        {"type": "ping", "id": "r4", "timestamp": "t" * 900_000},
        {"type": "subscribe", "channels": ["c" * 1000] * 900, "id": "r5"},
        {"type": "subscribe", "channel": "evolution", "filters": {"f" * 600_000: 1}, "id": "r6"},
        {"type": "control", "action": "x" * 600_000, "id": "r7"},
        {"type": "command", "cmd": "y" * 600_000, "id": "r8"},
        {"type": "command", "cmd": "rollback", "args": {"generation": ["g"] * 90_000}},
        {"type": "command", "cmd": "set_parameters", "args": {"p" * 600_000: 1}, "id": "r10"},
        {"type": "n" * 600_000, "id": "r11"},
        {"type": "get_agent_code", "agent_id": "agent-" + "9" * 600_000, "id": "r2"},
    ]
    async with make_server() as server:
        headers = {"Authorization": f"Bearer {server.token()}"}
        async with connect(server.url, additional_headers=headers, max_size=None) as ws:
            for request in requests:
                await ws.send(json.dumps(request))
                [frame] = await replies(ws, 1)
                assert len(frame) < MAX_REPLY, (request.get("id"), len(frame), frame[:200])
                message = json.loads(frame)
                assert len(str(message.get("reply_to", ""))) <= ECHO
                if message["type"] == "error":
                    for value in message["error"]["details"].values():
                        assert len(json.dumps(value)) < 16 * ECHO
            await ws.send(json.dumps({"type": "ping", "id": "still-open"}))
            assert json.loads(await ws.recv())["reply_to"] == "still-open"


# -- 4 and 5. tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("token", [{"a": 1}, ["t"], 5, None, True])
async def test_auth_with_a_token_that_is_not_a_string_fails_and_closes_1008(token: Any) -> None:
    """An auth message whose token is not a JWT string gets AUTH_FAILED, then a 1008 close."""
    async with make_server() as server, connect(server.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token, "id": "a"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert reply["type"] == "error"
        assert reply["error"]["code"] == "AUTH_FAILED"
        assert reply["reply_to"] == "a"
        assert await close_code(ws) == 1008


@pytest.mark.parametrize("size", [129, 10 * KIB])
async def test_token_with_a_sub_over_128_bytes_is_refused(size: int) -> None:
    """A validly signed token whose sub is over 128 bytes: AUTH_FAILED + 1008, or 401 by header."""
    sub = "u" * size
    async with make_server() as server:
        now = int(time.time())
        token = jwt.encode(
            {"sub": sub, "role": "operator", "iat": now, "exp": now + 600}, SECRET, "HS256"
        )
        async with connect(server.url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            try:
                reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                assert reply["error"]["code"] == "AUTH_FAILED", reply
                assert sub not in json.dumps(reply)
            except ConnectionClosed:
                pass
            assert await close_code(ws) in (1008, 1009)
        if size < 4 * KIB:  # an HTTP header line has room for it
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.url, additional_headers={"Authorization": f"Bearer {token}"})
            assert refused.value.response.status_code == 401


# -- 6. a server that verifies RS256 -----------------------------------------------------------


def test_rs256_server_cannot_issue_tokens_without_its_private_key(
    rsa_keys: tuple[bytes, bytes],
) -> None:
    """token() on a server verifying RS256 with only the public key raises, naming the fix."""
    _, public = rsa_keys
    server = make_server(verifier=TokenVerifier(public, "RS256"))
    with pytest.raises(InvalidParameters, match="cannot sign"):
        server.token("ada", "viewer")


async def test_rs256_server_with_its_private_key_issues_tokens_it_accepts(
    rsa_keys: tuple[bytes, bytes],
) -> None:
    """Given the private key, token() signs RS256 tokens that the same server accepts."""
    private, public = rsa_keys
    verifier = TokenVerifier(public, "RS256", signing_key=private)
    async with make_server(verifier=verifier) as server:
        token = server.token("ada", "viewer")
        assert jwt.get_unverified_header(token)["alg"] == "RS256"
        async with client(server, role="viewer") as c:
            assert (await c.request({"type": "ping"}))["type"] == "pong"


async def test_a_client_turned_away_is_not_read_any_more() -> None:
    """An unauthenticated client that floods without reading is reset soon after its 1009
    (the server stops reading it), not read until it stops; its place is free again."""
    async with make_server(auth_timeout=timeout(60)) as server:
        ws = await connect(server.url, close_timeout=timeout(0.1))
        ws.transport.pause_reading()  # never reads the close frame, just sends
        header = Frame(Opcode.TEXT, b"").serialize(mask=True)[:2]
        # A text frame announcing 1 MiB (masked, 64-bit length), then its bytes.
        ws.transport.write(bytes([header[0], 0x80 | 127]) + (1 << 20).to_bytes(8, "big"))
        ws.transport.write(b"\0\0\0\0")
        chunk = b"x" * 65536
        async with asyncio.timeout(TIMEOUT):
            while server.hub.connections or server.registry.unauthenticated.total:
                if not ws.transport.is_closing() and ws.transport.get_write_buffer_size() < 1 << 20:
                    ws.transport.write(chunk)
                await asyncio.sleep(0.001)  # a poll: the server reads what was written
        assert server.stats.rejected == 1
        ws.transport.abort()


async def test_new_unauthenticated_connections_per_address_are_rate_limited() -> None:
    """32 come and go at once; the next before the bucket refills is refused (429,
    Retry-After)."""
    # The default refills 10 a second: 32 handshakes on a loaded machine can take longer
    # than a tenth of a second. Here the bucket does not refill during the test.
    limits = Limits(unauthenticated_per_second=0.001)
    async with make_server(limits=limits) as server:
        for _ in range(PER_ADDRESS):
            ws = await connect(server.url)
            await ws.close()
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.url, open_timeout=TIMEOUT)
        assert refused.value.response.status_code == 429
        assert refused.value.response.headers["Retry-After"] == "1"
        async with client(server, header=True) as c:  # header auth: not counted
            assert (await c.request({"type": "ping"}))["type"] == "pong"
