"""Benchmark: fan-out of evolution updates, tdevlab's server against a bare websockets server.

What is measured
----------------
Two servers do the same work, one after the other in this process, each on a free
loopback port:

1. ``bare``: a websockets 17 asyncio server (``websockets.asyncio.server.serve``,
   ``compression=None``) whose handler acknowledges a subscribe request and keeps the
   connection in a set; the publisher encodes each message once (stdlib ``json``) and calls
   ``websockets.asyncio.server.broadcast(connections, message)``.
2. ``tdevlab``: :class:`tdevlab.server.EvolutionServer` (``port=0``, ``metrics_interval=0``,
   an engine that is never started); the publisher calls ``server.hub.publish("evolution",
   "evolution_update", data, ...)`` on the server's loop, as the engine's events are.

Both publish the same messages: the API's envelope (``id``, ``type``, ``timestamp``,
``channel``, ``seq``, ``data``) around an ``evolution_update`` data object with the spec's
fields, a few extras and ``sent_at`` (the publisher's ``time.time()``), ~350 bytes of JSON.

The subscribers are a separate process (``benchmarks/_clients.py``): N connections
(compression off), authenticated with an ``Authorization: Bearer`` header (a distinct user
each), subscribed to ``evolution``. Each is websockets' sans-I/O ``ClientProtocol`` in a
plain ``asyncio.Protocol``, which counts each message and records ``time.time() - sent_at``
as its bytes are read: no task or queue per connection, so the clients' own cost per
message (~20 us) stays well under what it was with ``websockets.asyncio.client`` (~33 us),
which made the single client process, not the server, the latency tail at 1000
subscribers. Both servers are measured by the same fleet, so the comparison stays fair.

For each subscriber count (100 and 1000) and each server, per run:

* latency: 20 messages/second for 5 s (paced on the server's loop); the publish-to-receive
  p50 and p99 over every delivery of the run;
* throughput: the publisher publishes a batch of k messages per loop turn
  (``await asyncio.sleep(0)`` between batches) for 3 s, at most ``--max-deliveries``
  deliveries; reported are the messages delivered per second as counted by the clients
  (deliveries / (last receive - first publish)) and the server process's CPU time
  (``time.process_time()``, from the first publish until the clients got everything) per
  delivery. k=1 is one event per loop turn (the engine's pace); k=10 a burst of events.
  On a small machine the single client process is often the flood's bottleneck (its CPU
  use is in the diagnostics table): then delivered msg/s says how cheaply the clients can
  take each server's output, and the server's CPU per delivery is its own cost.

Runs are repeated (``--repeats``, default 3) with the servers interleaved and their order
alternated; the table shows medians. Diagnostics (the server's and the clients' CPU use
during throughput, deliveries lost, close codes) go to the JSON and to stderr.

Targets (checked at the end): tdevlab's throughput >= the bare server's at each subscriber
count and batch size; tdevlab's p99 < 50 ms at 1000 subscribers and 20 updates/s.

Run it::

    python benchmarks/fanout.py                      # ~2.5 minutes, plain-text table
    python benchmarks/fanout.py --markdown --json fanout.json
    python benchmarks/fanout.py --quick              # a smoke run (~15 s)
    python benchmarks/fanout.py --profile fanout.prof --repeats 1 --subscribers 1000
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
import cProfile
import gc
import json
import pstats
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psutil
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve

from benchmarks._clients import (
    FleetProcess,
    evolution_data,
    median,
    quiet_logs,
    raise_fd_limit,
)
from benchmarks._tables import (
    format_plain,
    report_checks,
    versions,
    write_json,
)
from tdevlab import Engine
from tdevlab.server import EvolutionServer

SECRET = "fanout-benchmark-secret-long-enough-for-hs256"
P99_TARGET_MS = 50.0


# -- the two servers -------------------------------------------------------------------------


class Contender(Protocol):
    key: str
    label: str
    url: str

    async def start(self) -> None: ...

    def publish(self, generation: int, data: dict[str, Any]) -> None: ...

    async def stop(self) -> None: ...


class TdevlabContender:
    """tdevlab's EvolutionServer; events published through its hub, on its loop."""

    key = "tdevlab"
    label = "tdevlab EvolutionServer"

    def __init__(self) -> None:
        self.server = EvolutionServer(
            Engine(seed=1, population_size=20),
            host="127.0.0.1",
            port=0,
            secret=SECRET,
            metrics_interval=0,
        )
        self.url = ""

    async def start(self) -> None:
        await self.server.__aenter__()
        self.url = self.server.url

    def publish(self, generation: int, data: dict[str, Any]) -> None:
        self.server.hub.publish(
            "evolution",
            "evolution_update",
            data,
            generation=generation,
            fitness=data["best_fitness"],
        )

    async def stop(self) -> None:
        await self.server.aclose()


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class BareContender:
    """websockets' own server and ``broadcast``, doing the same job with nothing else."""

    key = "bare"
    label = "bare websockets broadcast"

    def __init__(self) -> None:
        self.connections: set[ServerConnection] = set()
        self.server: Server | None = None
        self.prefix = secrets.token_hex(4)
        self.seq = 0
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        try:
            async for message in ws:
                request = json.loads(message)
                if request.get("type") == "subscribe":
                    self.connections.add(ws)
                    ack = {
                        "type": "ack",
                        "reply_to": request.get("id"),
                        "data": {"request": "subscribe", "channels": ["evolution"]},
                    }
                    await ws.send(json.dumps(ack))
        finally:
            self.connections.discard(ws)

    async def start(self) -> None:
        self.server = await serve(self.handler, "127.0.0.1", 0, compression=None)
        port = next(iter(self.server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/evolution"

    def publish(self, generation: int, data: dict[str, Any]) -> None:
        self.seq += 1
        message = {
            "id": f"{self.prefix}-{self.seq}",
            "type": "evolution_update",
            "timestamp": _iso(time.time()),
            "channel": "evolution",
            "seq": self.seq,
            "data": data,
        }
        broadcast(self.connections, json.dumps(message, separators=(",", ":")))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


CONTENDERS: dict[str, type[TdevlabContender] | type[BareContender]] = {
    "bare": BareContender,
    "tdevlab": TdevlabContender,
}


# -- publishers ------------------------------------------------------------------------------


async def publish_paced(contender: Contender, rate: float, duration: float) -> int:
    """Publish ``rate`` messages per second for ``duration`` seconds; return the count."""
    loop = asyncio.get_running_loop()
    count = max(int(rate * duration), 1)
    start = loop.time()
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        contender.publish(i, evolution_data(i, time.time()))
    return count


async def publish_flood(contender: Contender, batch: int, duration: float, limit: int) -> int:
    """Publish ``batch`` messages per loop turn for ``duration`` s (at most ``limit``)."""
    deadline = time.perf_counter() + duration
    count = 0
    while count < limit and time.perf_counter() < deadline:
        for _ in range(min(batch, limit - count)):
            contender.publish(count, evolution_data(count, time.time()))
            count += 1
        await asyncio.sleep(0)
    return count


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Settings:
    subscribers: list[int]
    batches: list[int]
    repeats: int
    rate: float
    latency_s: float
    flood_s: float
    max_deliveries: int


@dataclass
class Run:
    """One server at one subscriber count, one repeat."""

    key: str
    subscribers: int
    repeat: int
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    latency_expected: int = 0
    latency_received: int = 0
    # per batch size
    msgs_per_s: dict[int, float] = field(default_factory=dict)
    cpu_us_per_delivery: dict[int, float] = field(default_factory=dict)
    server_cpu_pct: dict[int, float] = field(default_factory=dict)
    client_cpu_pct: dict[int, float] = field(default_factory=dict)
    published: dict[int, int] = field(default_factory=dict)
    delivered: dict[int, int] = field(default_factory=dict)
    lost: dict[int, int] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def run_one(
    key: str, subscribers: int, repeat: int, settings: Settings, profiler: cProfile.Profile | None
) -> Run:
    """Start a server and a fleet, measure latency then throughput, stop both."""
    contender: Contender = CONTENDERS[key]()
    await contender.start()
    run = Run(key, subscribers, repeat)
    fleet: FleetProcess | None = None
    try:
        fleet = await FleetProcess.start(
            contender.url, subscribers, SECRET, user_prefix=f"{key}{repeat}"
        )
        client = psutil.Process(fleet.pid)

        await fleet.command("mode", mode="latency")
        gc.collect()
        published = await publish_paced(contender, settings.rate, settings.latency_s)
        stats = await fleet.wait_for_count(published * subscribers)
        run.p50_ms, run.p99_ms, run.max_ms = stats["p50_ms"], stats["p99_ms"], stats["max_ms"]
        run.latency_expected, run.latency_received = published * subscribers, stats["received"]

        for batch in settings.batches:
            await fleet.command("mode", mode="count")
            gc.collect()
            limit = max(settings.max_deliveries // subscribers, 1)
            client_cpu0, cpu0, wall0 = _cpu(client), time.process_time(), time.time()
            if profiler is not None and key == "tdevlab":
                profiler.enable()
            published = await publish_flood(contender, batch, settings.flood_s, limit)
            stats = await fleet.wait_for_count(published * subscribers)
            if profiler is not None and key == "tdevlab":
                profiler.disable()
            cpu = time.process_time() - cpu0
            span = max(stats["last"] - wall0, 1e-9)
            delivered = stats["received"]
            run.published[batch] = published
            run.delivered[batch] = delivered
            run.lost[batch] = published * subscribers - delivered
            run.msgs_per_s[batch] = delivered / span
            run.cpu_us_per_delivery[batch] = cpu / max(delivered, 1) * 1e6
            run.server_cpu_pct[batch] = cpu / span * 100
            run.client_cpu_pct[batch] = (_cpu(client) - client_cpu0) / span * 100
        run.closes = (await fleet.command("stats"))["closes"]
    finally:
        if fleet is not None:
            await fleet.quit()
        await contender.stop()
    return run


def describe(run: Run) -> str:
    parts = [
        f"{run.key:7} n={run.subscribers:4} rep {run.repeat + 1}:",
        f"p50 {run.p50_ms:.1f} ms p99 {run.p99_ms:.1f} ms max {run.max_ms:.1f} ms"
        f" ({run.latency_received}/{run.latency_expected})",
    ]
    for batch, rate in run.msgs_per_s.items():
        parts.append(
            f"| k={batch}: {rate:,.0f} msg/s {run.cpu_us_per_delivery[batch]:.2f} us/dlv"
            f" srv {run.server_cpu_pct[batch]:.0f}% cli {run.client_cpu_pct[batch]:.0f}%"
            f" lost {run.lost[batch]}"
        )
    if run.closes:
        parts.append(f"closes {run.closes}")
    return " ".join(parts)


async def benchmark(settings: Settings, profiler: cProfile.Profile | None) -> list[Run]:
    """Every server at every subscriber count, repeated, interleaved; return the runs."""
    runs = []
    for repeat in range(settings.repeats):
        for subscribers in settings.subscribers:
            order = list(CONTENDERS) if repeat % 2 == 0 else list(reversed(CONTENDERS))
            for key in order:
                run = await run_one(key, subscribers, repeat, settings, profiler)
                print(describe(run), file=sys.stderr, flush=True)
                runs.append(run)
    return runs


# -- results ---------------------------------------------------------------------------------


def summarize(runs: list[Run], settings: Settings) -> dict[tuple[int, str], dict[str, Any]]:
    """Medians over repeats per (subscribers, server)."""
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for subscribers in settings.subscribers:
        for key in CONTENDERS:
            mine = [r for r in runs if r.key == key and r.subscribers == subscribers]
            summary: dict[str, Any] = {
                "p50_ms": median([r.p50_ms for r in mine]),
                "p99_ms": median([r.p99_ms for r in mine]),
                "latency_lost": sum(r.latency_expected - r.latency_received for r in mine),
            }
            for batch in settings.batches:
                summary[f"msgs_per_s_k{batch}"] = median([r.msgs_per_s[batch] for r in mine])
                summary[f"cpu_us_k{batch}"] = median([r.cpu_us_per_delivery[batch] for r in mine])
                summary[f"server_cpu_pct_k{batch}"] = median(
                    [r.server_cpu_pct[batch] for r in mine]
                )
                summary[f"client_cpu_pct_k{batch}"] = median(
                    [r.client_cpu_pct[batch] for r in mine]
                )
                summary[f"lost_k{batch}"] = sum(r.lost[batch] for r in mine)
            out[(subscribers, key)] = summary
    return out


def table_rows(
    summary: dict[tuple[int, str], dict[str, Any]], settings: Settings
) -> list[list[str]]:
    header = ["subscribers", "server", "p50 ms @20/s", "p99 ms @20/s"]
    for batch in settings.batches:
        header += [f"delivered msg/s (k={batch})", f"server CPU us/delivery (k={batch})"]
    rows = [header]
    for (subscribers, key), s in summary.items():
        row = [str(subscribers), CONTENDERS[key].label, f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}"]
        for batch in settings.batches:
            row += [f"{s[f'msgs_per_s_k{batch}']:,.0f}", f"{s[f'cpu_us_k{batch}']:.2f}"]
        rows.append(row)
    return rows


def diagnostic_rows(
    summary: dict[tuple[int, str], dict[str, Any]], settings: Settings
) -> list[list[str]]:
    header = ["subscribers", "server"]
    for batch in settings.batches:
        header += [f"server CPU % (k={batch})", f"clients CPU % (k={batch})", f"lost (k={batch})"]
    header.append("lost @20/s")
    rows = [header]
    for (subscribers, key), s in summary.items():
        row = [str(subscribers), key]
        for batch in settings.batches:
            row += [
                f"{s[f'server_cpu_pct_k{batch}']:.0f}",
                f"{s[f'client_cpu_pct_k{batch}']:.0f}",
                str(s[f"lost_k{batch}"]),
            ]
        row.append(str(s["latency_lost"]))
        rows.append(row)
    return rows


def checks(
    summary: dict[tuple[int, str], dict[str, Any]], settings: Settings
) -> list[dict[str, Any]]:
    out = []
    for subscribers in settings.subscribers:
        ours, bare = summary[(subscribers, "tdevlab")], summary[(subscribers, "bare")]
        for batch in settings.batches:
            value = ours[f"msgs_per_s_k{batch}"] / bare[f"msgs_per_s_k{batch}"]
            out.append(
                {
                    "name": f"throughput tdevlab / bare, {subscribers} subscribers, k={batch}",
                    "value": value,
                    "target": ">= 1.00",
                    "status": "PASS" if value >= 1.0 else "FAIL",
                }
            )
    if 1000 in settings.subscribers:
        p99 = summary[(1000, "tdevlab")]["p99_ms"]
        out.append(
            {
                "name": f"tdevlab p99 at 1000 subscribers, {settings.rate:g} updates/s (ms)",
                "value": p99,
                "target": f"< {P99_TARGET_MS:g}",
                "status": "PASS" if p99 < P99_TARGET_MS else "FAIL",
            }
        )
    return out


def message_sizes() -> dict[str, int]:
    """Bytes of one encoded message from each server (same data)."""
    data = evolution_data(12345, time.time())
    bare = BareContender()
    bare.seq = 12344
    sizes = {}
    message = {
        "id": f"{bare.prefix}-1",
        "type": "evolution_update",
        "timestamp": _iso(time.time()),
        "channel": "evolution",
        "seq": 12345,
        "data": data,
    }
    sizes["bare"] = len(json.dumps(message, separators=(",", ":")).encode())
    server = EvolutionServer(Engine(seed=1, population_size=20), port=0, secret=SECRET)
    sizes["tdevlab"] = len(
        server.hub.publish("evolution", "evolution_update", data, generation=12345)
    )
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--subscribers", default="100,1000", help="comma-separated counts")
    parser.add_argument("--batches", default="1,10", help="messages per loop turn, flood phase")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="updates/s, latency phase")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--flood-seconds", type=float, default=3.0)
    parser.add_argument("--max-deliveries", type=int, default=600_000, help="bound per flood phase")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--profile", type=Path, metavar="PATH", help="cProfile tdevlab floods")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers, args.repeats = "10,100", 1
        args.latency_seconds, args.flood_seconds = 1.0, 0.5
    return args


async def amain(args: argparse.Namespace) -> int:
    settings = Settings(
        subscribers=[int(x) for x in args.subscribers.split(",")],
        batches=[int(x) for x in args.batches.split(",")],
        repeats=args.repeats,
        rate=args.rate,
        latency_s=args.latency_seconds,
        flood_s=args.flood_seconds,
        max_deliveries=args.max_deliveries,
    )
    info = versions("tdevlab", "websockets", "msgspec")
    info["load_average"] = tuple(round(x, 2) for x in os.getloadavg())
    sizes = message_sizes()
    print(
        f"fan-out: subscribers {settings.subscribers}, {settings.repeats} repeats, latency "
        f"{settings.rate:g}/s for {settings.latency_s:g} s, floods of k={settings.batches} "
        f"per loop turn for {settings.flood_s:g} s; message bytes {sizes}"
    )
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    print()
    profiler = cProfile.Profile() if args.profile is not None else None
    started = time.perf_counter()
    runs = await benchmark(settings, profiler)
    elapsed = time.perf_counter() - started
    summary = summarize(runs, settings)
    rows = table_rows(summary, settings)
    results = checks(summary, settings)

    print(format_plain(rows))
    print()
    print(format_plain(diagnostic_rows(summary, settings)))
    print()
    status = report_checks(rows, results, elapsed, args.markdown)
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"\nprofile of tdevlab's flood phases written to {args.profile}; top functions:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    if args.json is not None:
        payload = {
            "settings": asdict(settings),
            "versions": info,
            "message_bytes": sizes,
            "runs": [asdict(r) for r in runs],
            "medians": {f"{n}/{k}": s for (n, k), s in summary.items()},
            "checks": results,
            "elapsed_s": elapsed,
        }
        write_json(args.json, payload)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables; return 0 if every target passes."""
    args = parse_args(argv)
    quiet_logs()
    raise_fd_limit()
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
