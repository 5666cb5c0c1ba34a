"""Shared pieces of the server benchmarks: the client fleet process and its driver.

The fleet is a separate process (so its CPU does not count as the server's) that opens N
WebSocket connections with ``websockets.asyncio.client.connect`` (compression off), sends
each a subscribe request and waits for its ack, then records every frame it receives: a
count, the time of the last one and, in ``latency`` mode, ``time.time() - sent_at`` where
``sent_at`` is the publisher's ``time.time()`` carried in the event's ``data`` (same
machine, same clock). It can also hold one *stalled reader*: a raw TCP socket that does a
real WebSocket handshake with an ``Authorization`` header, subscribes, reads the ack and
then never reads again.

The parent drives the fleet with JSON lines on its stdin and reads JSON lines from its
stdout (:class:`FleetProcess`). Run by hand::

    python benchmarks/_clients.py --url ws://127.0.0.1:8765/v1/evolution --count 10

(the tokens are signed with ``$TDEVLAB_BENCH_SECRET``). Every wait is bounded: the fleet
exits by itself after ``--timeout`` seconds or when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import logging
import math
import os
import resource
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

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


def format_plain(rows: list[list[str]]) -> str:
    """Align a table in columns (first column left, the others right)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows: list[list[str]]) -> str:
    """Render a table as GitHub Markdown."""
    header, *body = rows
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|",
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in body)
    return "\n".join(lines)


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
        self.connections: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []

    def reset(self, mode: str) -> None:
        self.mode = mode
        self.received = 0
        self.last = 0.0
        self.latencies = []

    async def read(self, ws: ClientConnection) -> None:
        """Record each received frame until the connection closes."""
        latencies = self.latencies
        try:
            while True:
                frame = await ws.recv(decode=False)
                now = time.time()
                self.received += 1
                self.last = now
                if self.mode == "latency":
                    if latencies is not self.latencies:
                        latencies = self.latencies
                    sent = sent_at(frame)  # type: ignore[arg-type]
                    if sent is not None:
                        latencies.append(now - sent)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            self.closes[str(code)] += 1

    def stats(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "received": self.received,
            "last": self.last,
            "closes": dict(self.closes),
            "samples": len(lat),
            "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "max_ms": max(lat) * 1e3 if lat else math.nan,
        }


def token_for(secret: str, user: str) -> str:
    """A viewer token for ``user`` signed with ``secret`` (what the server would issue)."""
    from tdevlab.protocol.auth import issue_token

    return issue_token(secret, user, "viewer", now=time.time(), ttl=24 * 3600)


async def open_fleet(
    fleet: Fleet, url: str, count: int, secret: str, prefix: str, concurrency: int
) -> int:
    """Open, subscribe and start reading ``count`` connections; return how many failed."""
    gate = asyncio.Semaphore(concurrency)
    failures = 0
    subscribe = json.dumps({"type": "subscribe", "channel": "evolution", "id": "sub"})

    async def one(i: int) -> None:
        nonlocal failures
        headers = {"Authorization": f"Bearer {token_for(secret, f'{prefix}-{i}')}"}
        async with gate:
            try:
                ws = await connect(
                    url,
                    additional_headers=headers,
                    compression=None,
                    open_timeout=30,
                    ping_interval=None,
                    max_size=None,
                )
                await ws.send(subscribe)
                async with asyncio.timeout(30):
                    while b'"ack"' not in (await ws.recv(decode=False)):  # type: ignore[operator]
                        pass
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                failures += 1
                print(f"fleet: connection {i} failed: {exc!r}", file=sys.stderr)
                return
        fleet.connections.append(ws)
        fleet.readers.append(asyncio.ensure_future(fleet.read(ws)))

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
        gc.collect()
        reply(
            {
                "ready": len(fleet.connections),
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
            elif name == "stats":
                reply(fleet.stats())
            elif name == "drain_stalled":
                assert stalled is not None
                reply(await stalled.drain(command.get("drain_timeout", 20.0)))
            elif name == "quit":
                abort = bool(command.get("abort"))
                break
        if abort:
            for ws in fleet.connections:
                ws.transport.abort()
        else:
            await asyncio.gather(*(_close(ws) for ws in fleet.connections))
        if fleet.readers:
            await asyncio.wait(fleet.readers, timeout=10)
    reply({"bye": True, "closes": dict(fleet.closes)})


async def _close(ws: ClientConnection) -> None:
    with contextlib.suppress(OSError, ConnectionClosed, TimeoutError):
        async with asyncio.timeout(2):
            await ws.close()


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
        self, expected: int, *, limit_s: float = 20.0, idle_s: float = 2.0
    ) -> dict[str, Any]:
        """Poll the fleet until it received ``expected`` frames, or nothing came for
        ``idle_s`` seconds, or ``limit_s`` passed; return the last stats."""
        deadline = time.monotonic() + limit_s
        stats = await self.command("stats")
        progress_at, last_count = time.monotonic(), stats["received"]
        while stats["received"] < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            stats = await self.command("stats")
            if stats["received"] != last_count:
                progress_at, last_count = time.monotonic(), stats["received"]
            elif time.monotonic() - progress_at > idle_s:
                break
        return stats

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
