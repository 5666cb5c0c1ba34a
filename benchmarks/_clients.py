"""Shared pieces of the server benchmarks: the client fleet process and its driver.

The fleet is a separate process (so its CPU does not count as the server's) that opens N
WebSocket connections (compression off, ``Authorization: Bearer`` header, a distinct user
each), sends each a subscribe request and waits for its ack, then records every message it
receives: a count, the time of the last one and, in ``latency`` mode,
``time.time() - sent_at`` where ``sent_at`` is the publisher's ``time.time()`` carried in
the event's ``data`` (same machine, same clock).

Each connection is websockets' sans-I/O ``ClientProtocol`` (handshake, frame parsing, pongs
and the closing handshake are websockets' code) driven by a plain ``asyncio.Protocol``: the
bytes read are fed to the protocol in ``data_received`` and every complete message in them
is counted and timestamped there, with the time the bytes were read. There is no task per
connection and no message queue. ``websockets.asyncio.client.connect`` costs a task
wake-up, its message assembler and a ``recv()`` per message: at 1000 subscribers it took
about 30-37 us of CPU per message against 17-28 us here, and since a server has written a
1000-message burst about 10 ms after the publish, the single client process, not the
server, set the latency tail. The fleet also keeps out of its own way: its long-lived
objects are frozen out of the garbage collector after setup (a full collection stalled it
~40 ms mid-run), and polls only read the count (sorting 100 000 samples while the last
burst arrives delayed that burst by ~40 ms). Every server a benchmark compares is measured
by this same fleet.

It can also hold one *stalled reader*: a raw TCP socket that does a real WebSocket
handshake with an ``Authorization`` header, subscribes, reads the ack and then never reads
again.

The parent drives the fleet with JSON lines on its stdin and reads JSON lines from its
stdout (:class:`FleetProcess`): ``mode`` (``latency`` or ``count``; starts the count over),
``count`` (received so far), ``stats`` (the count and the latency percentiles),
``drain_stalled`` and ``quit`` (``"abort": true`` drops the connections without a closing
handshake). Run by hand::

    python benchmarks/_clients.py --url ws://127.0.0.1:8765/v1/evolution --count 10

(the tokens are signed with ``$TDEVLAB_BENCH_SECRET``). Every wait is bounded: the fleet
exits by itself after ``--timeout`` seconds or when its stdin closes.
"""

# ruff: noqa: E402  (the path is set before the imports)

from __future__ import annotations

import os
import sys

if not __package__:  # run by its path (the fleet process): tdevlab from the same repository
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.path.dirname(_here), *(p for p in sys.path if os.path.abspath(p) != _here)]

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import logging
import math
import resource
import socket
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

SECRET_ENV = "TDEVLAB_BENCH_SECRET"
HERE = Path(__file__).resolve().parent

# -- small shared helpers -------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(q / 100.0 * len(ordered)), 1)
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median, NaN when empty (NaNs are left out)."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


_SENT_AT = b'"sent_at":'


def sent_at(frame: bytes) -> float | None:
    """The ``sent_at`` number of an event, found without parsing the whole JSON.

    The publishers put ``sent_at`` first in ``data`` with more keys after it, so the
    number ends at the next comma. Cheap on purpose: the fleet must not be the bottleneck.
    """
    start = frame.find(_SENT_AT)
    if start < 0:
        return None
    start += len(_SENT_AT)
    end = frame.find(b",", start)
    return float(frame[start:end]) if end > 0 else None


def evolution_data(generation: int, now: float, padding: int = 0) -> dict[str, Any]:
    """A synthetic ``evolution_update`` data object (the spec's fields and a few extras).

    ``sent_at`` (the publisher's ``time.time()``) comes first, for the fleet's latency.
    ``padding`` adds a ``fitness_history`` list of about that many bytes of JSON.
    """
    data: dict[str, Any] = {
        "sent_at": now,
        "generation": generation,
        "average_fitness": 0.7312 + (generation % 97) * 1e-4,
        "best_fitness": 0.9537 + (generation % 89) * 1e-4,
        "improvement": 0.0021,
        "agents_evolved": 100,
        "mutations_applied": 15,
        "crossovers": 70,
        "best_agent_id": f"agent-{generation % 1000}",
        "population_size": 100,
    }
    if padding > 0:
        # ~19 bytes of JSON per float: a fitness trace, as a bigger real event would carry.
        count = max(padding // 19, 1)
        data["fitness_history"] = [0.123456789012345 + i * 1e-9 for i in range(count)]
    return data


def quiet_logs() -> None:
    """Keep library warnings (expected disconnects) off the output."""
    for name in ("websockets", "tdevlab", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)


# -- the stalled reader ----------------------------------------------------------------------


class StalledReader:
    """A real client that completes the handshake, subscribes, and then never reads.

    A plain non-blocking socket: nothing reads it between :meth:`open` and :meth:`drain`
    (no transport, no background thread), so the kernel's receive buffer fills and the
    server's writes back up.
    """

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.received = 0

    async def open(self, url: str, token: str, subscribe: dict[str, Any]) -> None:
        """Handshake with ``Authorization: Bearer``, send ``subscribe``, read its ack."""
        loop = asyncio.get_running_loop()
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        self.sock = sock
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path or '/'} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n"
            "\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer and len(buffer) < 65536:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ConnectionError("the server closed during the handshake")
            buffer += chunk
        status = buffer.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"handshake refused: {status.decode(errors='replace')}")
        buffer = buffer.split(b"\r\n\r\n", 1)[1]
        frame = Frame(Opcode.TEXT, json.dumps(subscribe).encode()).serialize(mask=True)
        await loop.sock_sendall(sock, frame)
        while b'"ack"' not in buffer and len(buffer) < 65536:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ConnectionError("the server closed before acknowledging the subscription")
            buffer += chunk
        self.received = len(buffer)
        # From here on nothing reads this socket until drain().

    async def drain(self, limit_s: float) -> dict[str, Any]:
        """Read everything the kernel kept for us, until EOF, a reset, or ``limit_s``."""
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        started = time.time()
        backlog = 0
        end = "timeout"
        try:
            async with asyncio.timeout(limit_s):
                while True:
                    chunk = await loop.sock_recv(self.sock, 1 << 20)
                    if not chunk:
                        end = "eof"
                        break
                    backlog += len(chunk)
        except TimeoutError:
            pass
        except ConnectionResetError:
            end = "reset"
        finally:
            self.sock.close()
        self.received += backlog
        return {"end": end, "backlog_bytes": backlog, "drain_s": time.time() - started}


# -- the fleet (client process) --------------------------------------------------------------


class Fleet:
    """N subscribed connections and what they received."""

    def __init__(self) -> None:
        self.mode = "latency"
        self.received = 0
        self.last = 0.0
        self.latencies: list[float] = []
        self.closes: Counter[str] = Counter()
        self.subscribers: list[Subscriber] = []
        self.ack_bytes = 0  # the size of a subscribe's ack, as received

    def reset(self, mode: str) -> None:
        self.mode = mode
        self.received = 0
        self.last = 0.0
        self.latencies = []

    def count(self) -> dict[str, Any]:
        """What was received so far: cheap enough to poll while messages arrive."""
        return {"received": self.received, "last": self.last, "closes": dict(self.closes)}

    def stats(self) -> dict[str, Any]:
        """The count and the latency percentiles (sorting them stalls this loop: ask at the end)."""
        lat = self.latencies
        return {
            **self.count(),
            "samples": len(lat),
            "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "max_ms": max(lat) * 1e3 if lat else math.nan,
        }


class Subscriber(asyncio.Protocol):
    """One connection: websockets' sans-I/O ``ClientProtocol`` driven by an asyncio protocol.

    No task, no message queue: ``data_received`` feeds the bytes to the protocol and records
    each complete message on the spot, with the time the bytes were read. The protocol's own
    replies (pongs, the closing handshake) are written back at once.
    """

    def __init__(self, fleet: Fleet, url: str, token: str, subscribe: bytes) -> None:
        self.fleet = fleet
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.token = token
        self.subscribe = subscribe
        self.transport: asyncio.Transport | None = None
        self.fragments: list[bytes] = []
        loop = asyncio.get_running_loop()
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = self.protocol.connect()
        request.headers["Authorization"] = f"Bearer {self.token}"
        self.protocol.send_request(request)
        self._write_pending()

    def data_received(self, data: bytes) -> None:
        now = time.time()  # every message in these bytes arrived now
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if not isinstance(event, Frame):  # the handshake response
                if protocol.handshake_exc is None:
                    protocol.send_text(self.subscribe)
                continue
            opcode = event.opcode
            if opcode is not Opcode.TEXT and opcode is not Opcode.BINARY:
                if opcode is not Opcode.CONT:
                    continue  # ping (answered by the protocol), pong, close
                self.fragments.append(event.data)
                if not event.fin:
                    continue
                payload = b"".join(self.fragments)
                self.fragments = []
            elif not event.fin:
                self.fragments = [event.data]
                continue
            else:
                payload = event.data
            if not self.subscribed.done():
                if b'"ack"' in payload:
                    self.fleet.ack_bytes = len(payload)
                    self.subscribed.set_result(None)
                continue
            fleet = self.fleet
            fleet.received += 1
            fleet.last = now
            if fleet.mode == "latency":
                sent = sent_at(payload)
                if sent is not None:
                    fleet.latencies.append(now - sent)
        self._write_pending()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._write_pending()
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        rcvd = self.protocol.close_rcvd
        self.fleet.closes[str(rcvd.code if rcvd is not None else 1006)] += 1
        if not self.subscribed.done():
            error = self.protocol.handshake_exc or exc or ConnectionError("connection lost")
            self.subscribed.set_exception(error)
        self.closed.set_result(None)

    def close(self) -> None:
        """Start the closing handshake (the server then closes the TCP connection)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._write_pending()

    def _write_pending(self) -> None:
        transport = self.transport
        assert transport is not None
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof() and not transport.is_closing():
                transport.write_eof()


def token_for(secret: str, user: str) -> str:
    """A viewer token for ``user`` signed with ``secret`` (what the server would issue)."""
    from tdevlab.protocol.auth import issue_token

    return issue_token(secret, user, "viewer", now=time.time(), ttl=24 * 3600)


async def open_fleet(
    fleet: Fleet, url: str, count: int, secret: str, prefix: str, concurrency: int
) -> int:
    """Open and subscribe ``count`` connections; return how many failed."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    gate = asyncio.Semaphore(concurrency)
    failures = 0
    subscribe = json.dumps({"type": "subscribe", "channel": "evolution", "id": "sub"}).encode()

    async def one(i: int) -> None:
        nonlocal failures
        subscriber = Subscriber(fleet, url, token_for(secret, f"{prefix}-{i}"), subscribe)
        async with gate:
            try:
                async with asyncio.timeout(30):
                    await loop.create_connection(lambda: subscriber, host, port)
                    await subscriber.subscribed
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                failures += 1
                print(f"fleet: connection {i} failed: {exc!r}", file=sys.stderr)
                if subscriber.transport is not None:
                    subscriber.transport.abort()
                return
        fleet.subscribers.append(subscriber)

    await asyncio.gather(*(one(i) for i in range(count)))
    return failures


def reply(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def fleet_main(args: argparse.Namespace) -> None:
    """Open the fleet, report ready, then answer commands until ``quit`` or the deadline."""
    quiet_logs()
    raise_fd_limit()
    secret = os.environ[SECRET_ENV]
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    fleet = Fleet()
    stalled: StalledReader | None = None
    async with asyncio.timeout(args.timeout):
        started = time.perf_counter()
        failures = await open_fleet(
            fleet, args.url, args.count, secret, args.user_prefix, args.concurrency
        )
        if args.stalled:
            stalled = StalledReader()
            subscribe = {"type": "subscribe", "channel": "evolution", "id": "sub"}
            await stalled.open(args.url, token_for(secret, "stalled-reader"), subscribe)
        # The connections' objects live as long as the fleet: keep them out of the
        # collector's full passes, which otherwise stall this loop for tens of ms mid-run.
        gc.collect()
        gc.freeze()
        reply(
            {
                "ready": len(fleet.subscribers),
                "ack_bytes": fleet.ack_bytes,
                "failed": failures,
                "connect_s": time.perf_counter() - started,
                "pid": os.getpid(),
            }
        )
        abort = False
        while True:
            line = await stdin.readline()
            if not line:
                break
            command = json.loads(line)
            name = command["cmd"]
            if name == "mode":
                fleet.reset(command["mode"])
                reply({"ok": True})
            elif name == "count":
                reply(fleet.count())
            elif name == "stats":
                reply(fleet.stats())
            elif name == "drain_stalled":
                assert stalled is not None
                reply(await stalled.drain(command.get("drain_timeout", 20.0)))
            elif name == "quit":
                abort = bool(command.get("abort"))
                break
        for subscriber in fleet.subscribers:
            if abort:
                assert subscriber.transport is not None
                subscriber.transport.abort()
            else:
                subscriber.close()
        if fleet.subscribers:
            # A server that does not finish the closing handshake in time is cut off.
            await asyncio.wait([s.closed for s in fleet.subscribers], timeout=5)
            for subscriber in fleet.subscribers:
                if not subscriber.closed.done():
                    assert subscriber.transport is not None
                    subscriber.transport.abort()
            await asyncio.wait([s.closed for s in fleet.subscribers], timeout=5)
    reply({"bye": True, "closes": dict(fleet.closes)})


# -- the driver (server process) -------------------------------------------------------------


class FleetProcess:
    """Starts the fleet in a child process and talks to it; the child always ends."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.ready: dict[str, Any] = {}

    @classmethod
    async def start(
        cls,
        url: str,
        count: int,
        secret: str,
        *,
        user_prefix: str = "fan",
        stalled: bool = False,
        lifetime_s: float = 600.0,
        ready_s: float = 120.0,
    ) -> FleetProcess:
        """Spawn the fleet and wait until every connection is subscribed."""
        argv = [
            sys.executable,
            str(HERE / "_clients.py"),
            "--url",
            url,
            "--count",
            str(count),
            "--user-prefix",
            user_prefix,
            "--timeout",
            str(lifetime_s),
        ]
        if stalled:
            argv.append("--stalled")
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, SECRET_ENV: secret},
            limit=1 << 20,
        )
        fleet = cls(process)
        try:
            fleet.ready = await fleet.receive(ready_s)
        except BaseException:
            await fleet.kill()
            raise
        if fleet.ready.get("ready") != count:
            await fleet.kill()
            raise RuntimeError(f"fleet did not open {count} connections: {fleet.ready}")
        return fleet

    @property
    def pid(self) -> int:
        return self.process.pid

    async def receive(self, wait_s: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(wait_s):
            line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fleet process ended")
        result: dict[str, Any] = json.loads(line)
        return result

    async def command(self, cmd: str, wait_s: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Send one command and return the fleet's answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        await self.process.stdin.drain()
        return await self.receive(wait_s)

    async def wait_for_count(
        self, expected: int, *, limit_s: float = 20.0, idle_s: float = 2.0, stats: bool = True
    ) -> dict[str, Any]:
        """Poll the fleet until it received ``expected`` frames, or nothing came for
        ``idle_s`` seconds, or ``limit_s`` passed; then return its stats (with ``stats``)
        or its count.

        The polls only ask for the count: the percentiles are computed once, at the end,
        so the fleet never sorts its samples while messages are still arriving.
        """
        deadline = time.monotonic() + limit_s
        counts = await self.command("count")
        progress_at, last_count = time.monotonic(), counts["received"]
        while counts["received"] < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            counts = await self.command("count")
            if counts["received"] != last_count:
                progress_at, last_count = time.monotonic(), counts["received"]
            elif time.monotonic() - progress_at > idle_s:
                break
        return await self.command("stats") if stats else counts

    async def quit(self, wait_s: float = 20.0) -> dict[str, Any]:
        """Ask the fleet to close its connections and exit; kill it if it does not."""
        try:
            return await self.command("quit", wait_s=wait_s)
        except (RuntimeError, TimeoutError, OSError):
            return {}
        finally:
            await self.kill()

    async def kill(self) -> None:
        """End the child for sure (after a short grace period)."""
        if self.process.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the fleet's command line."""
    parser = argparse.ArgumentParser(description="The benchmarks' client fleet (a process).")
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True, help="connections to open")
    parser.add_argument("--user-prefix", default="fan", help="users are PREFIX-0, PREFIX-1, ...")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes at once")
    parser.add_argument("--stalled", action="store_true", help="also open a stalled reader")
    parser.add_argument("--timeout", type=float, default=600.0, help="exit after this long")
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(TimeoutError, KeyboardInterrupt):
        asyncio.run(fleet_main(parse_args(None)))
