"""Real servers for the tests: embedded on 127.0.0.1 port 0, or `tdevlab serve` in a subprocess.

- ``make_server(**options)``: an ``EvolutionServer`` with a small fast engine; use it as an
  async context manager (``async with make_server() as server``) or ``start()`` / ``stop()`` it
  in its own thread (the ``threaded_server`` fixture of tests/conftest.py does that).
- ``client(server)``: a raw WebSocket test client (``Client``), authenticated.
- ``connected(server, **options)``: the library's client (``tdevlab.connect``), closed at the end;
  ``CountingBackoff`` lets a test wait for its reconnect attempts.
- ``serve_store(db)``: `tdevlab serve` in a subprocess, for the tests that kill or restart it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import tdevlab
from tdevlab import Engine
from tdevlab.client import Backoff
from tdevlab.protocol.auth import issue_token
from tdevlab.server import EvolutionServer
from tdevlab.server.hub import Connection
from tests.conftest import timeout

SECRET = "test-secret-that-is-long-enough-for-hs256!"
#: The secret of the `tdevlab serve` subprocesses.
SERVE_SECRET = "serve-test-secret-long-enough-for-hs256"
TIMEOUT = timeout(10)  # every wait for a reply or an event is bounded by it
#: A `tdevlab serve` process's start: Python, tdevlab and a strategy's library imported
#: (nevergrad alone takes seconds), the store opened and the run restored, on a loaded machine.
START = timeout(60)


def make_server(**kwargs: Any) -> EvolutionServer:
    """A server on a free loopback port with a small fast engine."""
    engine = kwargs.pop("engine", None) or Engine(seed=3, population_size=20)
    kwargs.setdefault("metrics_interval", 0.2)
    if "verifier" not in kwargs:
        kwargs["secret"] = SECRET
    return EvolutionServer(engine, host="127.0.0.1", port=0, **kwargs)


class Client:
    """A test client: sends JSON requests, matches replies by id, buffers other messages."""

    _ids = itertools.count(1)

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buffer: list[Any] = []

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(json.dumps(message) if isinstance(message, dict) else message)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request with a fresh id and return the reply naming it."""
        rid = f"r{next(self._ids)}"
        await self.send({**message, "id": rid})
        return await self.wait_for(lambda m: isinstance(m, dict) and m.get("reply_to") == rid)

    async def receive(self, within: float = TIMEOUT) -> Any:
        frame = await asyncio.wait_for(self.ws.recv(), within)
        if isinstance(frame, bytes):
            return frame
        return json.loads(frame)

    async def wait_for(self, predicate: Any, within: float = TIMEOUT) -> Any:
        """Return the first buffered or incoming message matching ``predicate``, waiting at
        most ``within`` seconds."""
        for i, message in enumerate(self.buffer):
            if predicate(message):
                return self.buffer.pop(i)
        async with asyncio.timeout(within):
            while True:
                message = await self.receive(within)
                if predicate(message):
                    return message
                self.buffer.append(message)

    async def event(self, type_: str, within: float = TIMEOUT, **where: Any) -> dict[str, Any]:
        """The next message of ``type_`` whose data has the given values."""

        def match(m: Any) -> bool:
            return (
                isinstance(m, dict)
                and m.get("type") == type_
                and all((m.get("data") or {}).get(k) == v for k, v in where.items())
            )

        message: dict[str, Any] = await self.wait_for(match, within)
        return message


@asynccontextmanager
async def client(
    server: EvolutionServer, *, role: str = "operator", user: str = "ada", header: bool = False
) -> AsyncIterator[Client]:
    """Connect and authenticate (first-message auth, or the Authorization header)."""
    token = server.token(user, role)
    headers = {"Authorization": f"Bearer {token}"} if header else None
    # A test client stops reading before it leaves; with unread events queued, websockets'
    # client cannot finish the closing handshake and waits close_timeout: keep that short.
    async with connect(
        server.url, additional_headers=headers, open_timeout=TIMEOUT, close_timeout=timeout(0.5)
    ) as ws:
        c = Client(ws)
        if not header:
            reply = await c.request({"type": "auth", "token": token})
            assert reply["type"] == "ack", reply
        yield c


def connection_of(server: EvolutionServer, user: str) -> Connection:
    """The server's side of ``user``'s (only) connection."""
    return next(
        c
        for c in server.hub.connections
        if c.session.claims is not None and c.session.claims.user == user
    )


@asynccontextmanager
async def stalled_client(
    server: EvolutionServer, channels: list[str], *, user: str = "stalled"
) -> AsyncIterator[Connection]:
    """A client that subscribes to ``channels`` and then never reads again.

    Yields the server's side of its connection. Loopback socket buffers grow to megabytes;
    here both ends' buffers are kept small, so the server holds unsent frames for this
    client within a fraction of a second of a running engine's output.
    """
    sock = socket.socket()
    # Set before connecting: the receive buffer decides the TCP window offered.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    headers = {"Authorization": f"Bearer {server.token(user, 'viewer')}"}
    async with connect(
        server.url,
        sock=sock,
        additional_headers=headers,
        open_timeout=TIMEOUT,
        close_timeout=timeout(0.5),
    ) as ws:
        c = Client(ws)
        assert (await c.request({"type": "subscribe", "channels": channels}))["type"] == "ack"
        connection = connection_of(server, user)
        assert connection.ws.transport is not None
        server_sock = connection.ws.transport.get_extra_info("socket")
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ws.transport.pause_reading()
        try:
            yield connection
        finally:
            # A polite close would wait behind the unread frames.
            ws.transport.abort()


@asynccontextmanager
async def connected(
    server: EvolutionServer, *, role: str = "operator", user: str = "ada", **options: Any
) -> AsyncIterator[tdevlab.Client]:
    """The library's client connected to ``server`` as ``user``; closed when the block ends."""
    c = await tdevlab.connect(server.url, token=server.token(user, role), **options)
    try:
        yield c
    finally:
        await c.close()


@dataclass(frozen=True)
class CountingBackoff(Backoff):
    """A ``Backoff`` that records each reconnect attempt it is asked about.

    ``delay(k)`` is asked before attempt ``k``: ``len(attempts) >= k + 1`` means attempts
    ``0 .. k-1`` were made (and failed), an event a test can wait for instead of a sleep.
    """

    attempts: list[int] = field(default_factory=list, compare=False)

    def delay(self, attempt: int, rng: random.Random) -> float | None:
        self.attempts.append(attempt)
        return super().delay(attempt, rng)


@contextmanager
def serve_store(
    db: Path, *extra: str, port: int = 0
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`tdevlab serve` on 127.0.0.1:``port`` with the SQLite store ``db``.

    It runs in the store's folder with population 30, no metrics events and the secret
    ``SERVE_SECRET``, plus ``extra`` options. Yields the process and the URL it printed, once it
    serves; the process is killed at the end if it is still alive.
    """
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tdevlab.cli",
            "serve",
            "--port",
            str(port),
            "--db",
            str(db),
            "--secret",
            SERVE_SECRET,
            "--population-size",
            "30",
            "--metrics-interval",
            "0",
            *extra,
        ],  # fmt: skip
        cwd=db.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + START
        while "serving" not in (line := proc.stdout.readline()):
            assert line or proc.poll() is None, "the server exited before serving"
            assert time.monotonic() < deadline, "the server did not start"
        yield proc, line.split("serving ")[1].strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)


def operator_token() -> str:
    """A fresh operator token signed with ``SERVE_SECRET``."""
    return issue_token(SERVE_SECRET, "ada", "operator", now=time.time())


async def watch_generations(url: str, until: int, start: bool) -> int:
    """Subscribe to ``evolution`` as an operator (and start the run); return the last
    generation seen once ``until`` is reached or the server goes away."""
    headers = {"Authorization": f"Bearer {operator_token()}"}
    last = -1
    async with connect(url, additional_headers=headers) as ws:
        c = Client(ws)
        await c.request({"type": "subscribe", "channels": ["evolution"]})
        if start:
            reply = await c.request({"type": "control", "action": "start"})
            assert reply["data"]["state"] == "running", reply
        while last < until:
            try:
                # A restored strategy's first generation (its library's state unpickled,
                # Nevergrad's optimizer rebuilt) can take longer than a reply on a loaded
                # machine; the caller bounds the whole watch.
                m = await c.event("evolution_update", START)
            except ConnectionClosed:
                break
            last = m["data"]["generation"]
    return last
