"""Benchmark: connection churn soak against a server whose run goes on.

What is measured
----------------
A tdevlab :class:`EvolutionServer` runs in this process in its background thread
(``server.start()``, ``autostart=True``: the engine, population 50, evolves for the whole
soak; metrics every second). A separate client process (``churn_soak.py --client-mode``)
runs 200 concurrent client loops for ``--duration`` seconds (default 300). Each loop, as
its own user (``churn-<i>``, ``Authorization: Bearer`` header), repeatedly:

1. connects (``websockets.asyncio.client.connect``) and subscribes to ``evolution`` and
   ``logs``;
2. reads 1 to 20 messages (at most 3 s);
3. one time in five sends a ``ping``, one in five a ``get_agent`` for the best agent it
   saw, and waits for the reply (at most 3 s);
4. leaves: a polite close seven times in ten, otherwise an abrupt one (the transport is
   aborted: no close frame, a reset);
5. waits 50-500 ms and starts again.

Every 5 s this process samples its own open file descriptors (``psutil.Process().num_fds()``),
its RSS, the server's live connections and the engine's generation. After the clients have
gone it waits (at most 20 s) for the server to drop every connection and samples again.
Reported: fds and RSS at the start (baseline, before any client), their maximum and their
value at the end; the RSS growth after the warm-up (``--warmup``, default 30 s of the soak);
the connections made and how they ended; the generations produced; and the sizes of the
server's per-connection bookkeeping at the end (live connections, per-user connection counts,
per-user data buckets, background tasks), which should be back to what they were.

The engine keeps its run in memory (no ``store``): the memory store keeps every generation's
row and events by design, so the RSS grows with the generations produced whatever the clients
do. To tell that growth from a leak, the bytes one generation adds are measured first (an
engine alone in a child process, ``--calibrate`` generations, RSS before and after) and
the report subtracts
``generations x bytes per generation``. ``--store sqlite`` keeps the run in a temporary SQLite
file instead.

PASS/FAIL: the fd count at the end is within 10 of the baseline; the RSS growth after the
warm-up is under 20 MB (reported raw and net of the run's own history).

Run it::

    python benchmarks/churn_soak.py                    # 5 minutes
    python benchmarks/churn_soak.py --quick            # a smoke run (~8 s)
    python benchmarks/churn_soak.py --markdown --json churn.json
"""

# ruff: noqa: E402  (the package's own imports come after the path is set)

from __future__ import annotations

import os
import sys

if not __package__:  # run by its path: import the `benchmarks` package from the repository
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.path.dirname(_here), *(p for p in sys.path if os.path.abspath(p) != _here)]

import argparse
import asyncio
import contextlib
import gc
import json
import random
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from benchmarks._clients import (
    SECRET_ENV,
    quiet_logs,
    raise_fd_limit,
    token_for,
)
from benchmarks._tables import (
    format_plain,
    report_checks,
    versions,
    write_json,
)

SECRET = "churn-soak-benchmark-secret-long-enough-for-hs256"
FD_TOLERANCE = 10
RSS_GROWTH_TARGET_MB = 20.0
MB = 1024 * 1024

# -- the client process ----------------------------------------------------------------------


async def read_until(ws: ClientConnection, marker: bytes, limit_s: float) -> bool:
    """Read frames until one contains ``marker`` (True) or ``limit_s`` pass (False)."""
    try:
        async with asyncio.timeout(limit_s):
            while True:
                frame = await ws.recv(decode=False)
                if isinstance(frame, bytes) and marker in frame:
                    return True
    except TimeoutError:
        return False


def best_agent(frame: bytes) -> str | None:
    """The ``best_agent_id`` of an evolution update, if this frame is one."""
    if b'"evolution_update"' not in frame:
        return None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        agent: str = json.loads(frame)["data"]["best_agent_id"]
        return agent
    return None


async def session(ws: ClientConnection, rng: random.Random, tally: Counter[str], n: int) -> None:
    """One connection's life between connect and leave."""
    await ws.send(
        json.dumps({"type": "subscribe", "channels": ["evolution", "logs"], "id": f"s{n}"})
    )
    want = rng.randint(1, 20)
    agent: str | None = None
    got = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3):
            while got < want:
                frame = await ws.recv(decode=False)
                assert isinstance(frame, bytes)
                got += 1
                agent = agent or best_agent(frame)
    tally["messages"] += got
    roll = rng.random()
    if roll < 0.2:
        await ws.send(json.dumps({"type": "ping", "id": f"p{n}", "timestamp": time.time()}))
        tally["pings"] += 1
        tally["pongs"] += await read_until(ws, f'"reply_to":"p{n}"'.encode(), 3.0)
    elif roll < 0.4 and agent is not None:
        await ws.send(json.dumps({"type": "get_agent", "agent_id": agent, "id": f"g{n}"}))
        tally["get_agents"] += 1
        tally["get_agent_replies"] += await read_until(ws, f'"reply_to":"g{n}"'.encode(), 3.0)


async def churn_loop(i: int, url: str, secret: str, deadline: float, seed: int) -> Counter[str]:
    """Connect, subscribe, read, leave, again, until ``deadline`` (monotonic)."""
    rng = random.Random(seed * 1000 + i)
    tally: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {token_for(secret, f'churn-{i}')}"}
    n = 0
    await asyncio.sleep(rng.uniform(0, 1))  # spread the first handshakes
    while time.monotonic() < deadline:
        n += 1
        ws: ClientConnection | None = None
        try:
            async with asyncio.timeout(20):
                ws = await connect(
                    url,
                    additional_headers=headers,
                    compression=None,
                    open_timeout=10,
                    close_timeout=2,
                    ping_interval=None,
                    max_size=None,
                )
                tally["connections"] += 1
                await session(ws, rng, tally, n)
                if rng.random() < 0.3:
                    assert ws.transport is not None
                    ws.transport.abort()
                    tally["left_abruptly"] += 1
                else:
                    await ws.close()
                    tally["left_politely"] += 1
        except InvalidStatus as exc:
            tally[f"refused_http_{exc.response.status_code}"] += 1
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            tally[f"closed_by_server_{code}"] += 1
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            tally[f"error_{type(exc).__name__}"] += 1
        finally:
            if ws is not None and ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()
        await asyncio.sleep(rng.uniform(0.05, 0.5))
    return tally


async def client_main(args: argparse.Namespace) -> None:
    """Run the churn loops and print their summed tallies as one JSON line."""
    quiet_logs()
    raise_fd_limit()
    secret = os.environ[SECRET_ENV]
    deadline = time.monotonic() + args.duration
    total: Counter[str] = Counter()
    async with asyncio.timeout(args.duration + 60):
        tallies = await asyncio.gather(
            *(churn_loop(i, args.url, secret, deadline, args.seed) for i in range(args.clients))
        )
    for tally in tallies:
        total.update(tally)
    print(json.dumps(dict(total)), flush=True)


# -- the server process ----------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    fds: int
    rss_mb: float
    connections: int
    generation: int


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    baseline: Sample | None = None
    end: Sample | None = None
    warmup_rss_mb: float = 0.0
    warmup_generation: int = 0
    generations: int = 0
    bytes_per_generation: float = 0.0
    clients: dict[str, int] = field(default_factory=dict)
    leftovers: dict[str, int] = field(default_factory=dict)
    leftovers_before: dict[str, int] = field(default_factory=dict)
    engine_state: str = ""
    client_exit: int | None = None


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / MB


def calibrate(generations: int, population: int) -> float:
    """Bytes of RSS one generation adds to an in-memory run: an engine alone, measured in a
    child process so this process's allocator is left as it was."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--calibrate-mode",
            "--calibrate",
            str(generations),
            "--population",
            str(population),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return float(out.stdout.strip())


def calibrate_here(generations: int, population: int) -> float:
    """What :func:`calibrate` runs in its child process."""
    from tdevlab import Engine

    engine = Engine(seed=7, population_size=population)
    for _ in range(1000):  # past the first allocations and the 512 snapshots kept
        engine.step()
    gc.collect()
    before = psutil.Process().memory_info().rss
    for _ in range(generations):
        engine.step()
    gc.collect()
    grown = psutil.Process().memory_info().rss - before
    engine.close()
    return max(float(grown), 0.0) / generations


def bookkeeping(server: Any) -> dict[str, int]:
    """Sizes of the server's per-connection state (read from the server's own thread)."""
    loop = server._loop
    future: Any = asyncio.run_coroutine_threadsafe(_sizes(server), loop)
    result: dict[str, int] = future.result(timeout=10)
    return result


async def _sizes(server: Any) -> dict[str, int]:
    return {
        "hub_connections": len(server.hub.connections),
        "user_connection_counts": len(server.registry.connections),
        "user_data_buckets": len(server.registry.buckets),
        "background_tasks": len(server._tasks),
        "pending_header_claims": len(server._header_claims),
        "loop_tasks": len(asyncio.all_tasks()),
    }


def sample(server: Any, started: float) -> Sample:
    return Sample(
        t=time.monotonic() - started,
        fds=psutil.Process().num_fds(),
        rss_mb=rss_mb(),
        connections=len(server.hub.connections),
        generation=server.engine.generation,
    )


def soak(args: argparse.Namespace) -> Soak:
    """Run the server, the churning clients and the sampler; always stop both."""
    from tdevlab import Engine
    from tdevlab.server import EvolutionServer

    result = Soak()
    if args.store == "memory":
        result.bytes_per_generation = calibrate(args.calibrate, args.population)
        print(
            f"calibration: {result.bytes_per_generation:.0f} bytes of RSS per generation "
            f"(in-memory run, population {args.population})",
            file=sys.stderr,
        )
    tmp = tempfile.TemporaryDirectory()
    store = None if args.store == "memory" else str(Path(tmp.name) / "soak.db")
    engine = Engine(seed=args.seed, population_size=args.population, store=store)
    server = EvolutionServer(engine, host="127.0.0.1", port=0, secret=SECRET, autostart=True)
    url = server.start()
    process: subprocess.Popen[str] | None = None
    started = time.monotonic()
    try:
        time.sleep(2.0)  # the run is going
        gc.collect()
        result.leftovers_before = bookkeeping(server)
        result.baseline = sample(server, started)
        result.samples.append(result.baseline)
        first_generation = result.baseline.generation
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--client-mode",
                "--url",
                url,
                "--clients",
                str(args.clients),
                "--duration",
                str(args.duration),
                "--seed",
                str(args.seed),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, SECRET_ENV: SECRET},
        )
        soak_start = time.monotonic()
        warmup = min(args.warmup, args.duration / 4)
        next_sample = soak_start + args.interval
        warmed = False
        hard_deadline = soak_start + args.duration + 90
        while process.poll() is None and time.monotonic() < hard_deadline:
            time.sleep(max(min(next_sample, hard_deadline) - time.monotonic(), 0.0))
            if time.monotonic() >= next_sample:
                s = sample(server, started)
                result.samples.append(s)
                if not warmed and time.monotonic() - soak_start >= warmup:
                    result.warmup_rss_mb, warmed = s.rss_mb, True
                    result.warmup_generation = s.generation
                print(
                    f"t={s.t:6.1f}s fds {s.fds:4} rss {s.rss_mb:6.1f} MB "
                    f"connections {s.connections:3} generation {s.generation}",
                    file=sys.stderr,
                    flush=True,
                )
                next_sample += args.interval
        with contextlib.suppress(subprocess.TimeoutExpired):
            out, _ = process.communicate(timeout=30)
            line = out.strip().splitlines()[-1] if out.strip() else "{}"
            result.clients = json.loads(line)
        result.client_exit = process.returncode
        # The clients are gone: the server must drop every connection.
        settle = time.monotonic() + 20
        while len(server.hub.connections) and time.monotonic() < settle:
            time.sleep(0.2)
        time.sleep(1.0)
        gc.collect()
        result.end = sample(server, started)
        result.samples.append(result.end)
        result.generations = result.end.generation - first_generation
        result.leftovers = bookkeeping(server)
        result.engine_state = server.engine.state.value
        if not warmed:
            result.warmup_rss_mb = result.baseline.rss_mb
            result.warmup_generation = result.baseline.generation
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        server.stop()
        tmp.cleanup()
    return result


def table_rows(result: Soak) -> list[list[str]]:
    assert result.baseline is not None
    assert result.end is not None
    fds = [s.fds for s in result.samples]
    rss = [s.rss_mb for s in result.samples]
    after_warmup_max = max(s.rss_mb for s in result.samples if s.rss_mb) - result.warmup_rss_mb
    history_mb = result.generations * result.bytes_per_generation / MB
    return [
        ["quantity", "start", "max", "end", "growth"],
        [
            "open fds (server process)",
            str(result.baseline.fds),
            str(max(fds)),
            str(result.end.fds),
            f"{result.end.fds - result.baseline.fds:+d}",
        ],
        [
            "RSS MB (server process)",
            f"{result.baseline.rss_mb:.1f}",
            f"{max(rss):.1f}",
            f"{result.end.rss_mb:.1f}",
            f"{result.end.rss_mb - result.baseline.rss_mb:+.1f}",
        ],
        [
            "RSS MB after warm-up",
            f"{result.warmup_rss_mb:.1f}",
            f"{max(rss):.1f}",
            f"{result.end.rss_mb:.1f}",
            f"{after_warmup_max:+.1f}",
        ],
        [
            "  of which the run's history (estimate)",
            "",
            "",
            "",
            f"{history_mb * _after_warmup_share(result):+.1f}",
        ],
        [
            "live connections",
            str(result.baseline.connections),
            str(max(s.connections for s in result.samples)),
            str(result.end.connections),
            f"{result.end.connections - result.baseline.connections:+d}",
        ],
    ]


def _after_warmup_share(result: Soak) -> float:
    """The share of the soak's generations produced after the warm-up sample."""
    assert result.baseline is not None
    assert result.end is not None
    total = result.end.generation - result.baseline.generation
    return (result.end.generation - result.warmup_generation) / total if total else 0.0


def checks(result: Soak) -> list[dict[str, Any]]:
    assert result.baseline is not None
    assert result.end is not None
    fd_delta = result.end.fds - result.baseline.fds
    growth = max(s.rss_mb for s in result.samples) - result.warmup_rss_mb
    history = result.generations * result.bytes_per_generation / MB * _after_warmup_share(result)
    return [
        {
            "name": "open fds at the end - baseline",
            "value": float(fd_delta),
            "target": f"within +/-{FD_TOLERANCE}",
            "status": "PASS" if abs(fd_delta) <= FD_TOLERANCE else "FAIL",
        },
        {
            "name": "RSS growth after warm-up, raw (MB)",
            "value": growth,
            "target": f"< {RSS_GROWTH_TARGET_MB:g}",
            "status": "PASS" if growth < RSS_GROWTH_TARGET_MB else "FAIL",
        },
        {
            "name": "RSS growth after warm-up net of the run's history (MB)",
            "value": growth - history,
            "target": f"< {RSS_GROWTH_TARGET_MB:g}",
            "status": "PASS" if growth - history < RSS_GROWTH_TARGET_MB else "FAIL",
        },
        {
            "name": "server bookkeeping back to its baseline (entries left over)",
            "value": float(
                sum(
                    max(result.leftovers.get(k, 0) - result.leftovers_before.get(k, 0), 0)
                    for k in ("hub_connections", "user_connection_counts", "background_tasks")
                )
            ),
            "target": "== 0",
            "status": "PASS"
            if all(
                result.leftovers.get(k, 0) <= result.leftovers_before.get(k, 0)
                for k in ("hub_connections", "user_connection_counts", "background_tasks")
            )
            else "FAIL",
        },
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of churn")
    parser.add_argument("--clients", type=int, default=200, help="concurrent client loops")
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before RSS counts")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--calibrate", type=int, default=5000, help="generations, memory store")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    parser.add_argument("--client-mode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calibrate-mode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.clients, args.warmup, args.interval = 3.0, 10, 1.0, 1.0
        args.calibrate = 200
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak (or, with ``--client-mode``, the churning clients)."""
    args = parse_args(argv)
    quiet_logs()
    raise_fd_limit()
    if args.client_mode:
        with contextlib.suppress(TimeoutError, KeyboardInterrupt):
            asyncio.run(client_main(args))
        return 0
    if args.calibrate_mode:
        print(calibrate_here(args.calibrate, args.population))
        return 0
    info = versions("tdevlab", "websockets")
    info["load_average"] = tuple(round(x, 2) for x in os.getloadavg())
    print(
        f"churn soak: {args.clients} client loops for {args.duration:g} s against a running "
        f"engine (population {args.population}, {args.store} store); samples every "
        f"{args.interval:g} s, warm-up {min(args.warmup, args.duration / 4):g} s"
    )
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    print()
    started = time.perf_counter()
    result = soak(args)
    elapsed = time.perf_counter() - started
    rows = table_rows(result)
    results = checks(result)
    print(format_plain(rows))
    print()
    clients = result.clients
    print(
        f"connections made {clients.get('connections', 0)}, left politely "
        f"{clients.get('left_politely', 0)}, abruptly {clients.get('left_abruptly', 0)}; "
        f"messages read {clients.get('messages', 0)}; pings {clients.get('pings', 0)} "
        f"(answered {clients.get('pongs', 0)}), get_agent {clients.get('get_agents', 0)} "
        f"(answered {clients.get('get_agent_replies', 0)}); generations during the soak "
        f"{result.generations}; engine {result.engine_state}"
    )
    other = {
        k: v for k, v in clients.items() if k.startswith(("refused", "closed_by_server", "error"))
    }
    print(f"other endings: {other or 'none'}")
    print(f"server bookkeeping before: {result.leftovers_before}")
    print(f"server bookkeeping after:  {result.leftovers}")
    print()
    report_checks(rows, results, elapsed, args.markdown)
    if args.json is not None:
        payload = {
            "settings": {k: v for k, v in vars(args).items() if k not in ("json", "url")},
            "versions": info,
            "result": asdict(result),
            "checks": results,
            "elapsed_s": elapsed,
        }
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
