"""Benchmark: fan-out of evolution updates, tdevlab's server against a bare websockets server.

What is measured
----------------
Two servers do the same work in this process, each on a free loopback port and each with
its own client process, taking turns:

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
Both acknowledge a subscribe with the same fields (channels, filters, epochs, sequence
numbers, the run's state and parameters: ~690 bytes), so the clients' connections carry the
same bytes. (In a separate experiment, a client whose connection's first segment was under
536 bytes spent 2 us of system time per later ~350-byte message instead of 11; within this
benchmark's alternation the difference did not show. ``--minimal-bare-ack`` gives the bare
server a ~150-byte ack to check it.)

The subscribers are a separate process (``benchmarks/_clients.py``): N connections
(compression off), authenticated with an ``Authorization: Bearer`` header (a distinct user
each), subscribed to ``evolution``. Each is websockets' sans-I/O ``ClientProtocol`` in a
plain ``asyncio.Protocol``, which counts each message and records ``time.time() - sent_at``
as its bytes are read: no task or queue per connection, so the clients' own cost per
message (~20 us) stays well under what it was with ``websockets.asyncio.client`` (~33 us),
which made the single client process, not the server, the latency tail at 1000
subscribers. Both servers are measured by the same kind of fleet, so the comparison stays
fair.

For each subscriber count (100 and 1000), a run starts both servers and both fleets and
measures:

* latency: one event every 50 ms (20/s, paced on the loop) for 10 s, the servers taking
  turns event by event (so 100 events each, and a server's burst to 1000 subscribers is
  delivered before the next event); the publish-to-receive p50 and p99 over every
  delivery of the run;
* throughput: the publisher publishes a batch of k messages per loop turn
  (``await asyncio.sleep(0)`` between batches) for 3 s in all, at most ``--max-deliveries``
  deliveries; reported are the messages delivered per second as counted by the clients
  (deliveries / (last receive - first publish), summed over the blocks) and the server
  process's CPU time (``time.process_time()``, from the first publish until the clients got
  everything) per delivery. k=1 is one event per loop turn (the engine's pace); k=10 a
  burst of events. On a small machine the single client process is often the flood's
  bottleneck (its CPU use is in the diagnostics table): then delivered msg/s says how
  cheaply the clients can take each server's output, and the server's CPU per delivery is
  its own cost.

The servers take turns in the order ABBA (events for latency, blocks of 0.5 s for the
floods; each flood block waits until its clients got everything): whatever else runs on
the machine falls on both alike. Runs are repeated (``--repeats``, default 5), the first
server alternating. The table shows each server's median over the runs, the median of
tdevlab / bare within a run, and that ratio's min-max over the runs. Diagnostics (the
server's and the clients' CPU use during throughput, deliveries lost, close codes, the
load average) go to the JSON and to stderr.

Targets (checked at the end, on the median ratio, with its spread): tdevlab's p50 and p99
at most the bare server's, and its throughput at least the bare server's, at each
subscriber count and batch size; tdevlab's p99 < 50 ms at 1000 subscribers. A missed
target is reported (FAIL), not an error: the exit status is 0 once the benchmark ran.

Run it (by its path from anywhere, or ``python -m benchmarks.fanout`` from the root)::

    python benchmarks/fanout.py                      # ~5 minutes, plain-text table
    python benchmarks/fanout.py --markdown --json fanout.json
    python benchmarks/fanout.py --quick              # a smoke run (~3 s)
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
import math
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
    load_average,
    report_checks,
    versions,
    write_json,
)
from tdevlab import Engine
from tdevlab.server import EvolutionServer

SECRET = "fanout-benchmark-secret-long-enough-for-hs256"
ALL_CHANNELS = ("evolution", "agents", "metrics", "alerts", "logs", "control")
# The run state an ack carries (an engine that was never started, as the tdevlab contender's).
RUN_PARAMETERS = Engine(seed=1, population_size=20).params.to_dict()
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

    #: With ``--minimal-bare-ack``: a subscribe's ack carries only what it answers.
    minimal_ack = False

    def __init__(self) -> None:
        self.connections: set[ServerConnection] = set()
        self.server: Server | None = None
        self.prefix = secrets.token_hex(4)
        self.seq = 0
        self.url = ""
        self.acks = 0

    def ack(self, reply_to: Any) -> str:
        """The ack of a subscribe: the same fields as tdevlab's (positions, epochs, the run).

        The same bytes on every connection, so that only the servers differ: the client's
        kernel can treat a connection whose first segments were all small differently.
        """
        self.acks += 1
        data: dict[str, Any] = {"request": "subscribe", "channels": ["evolution"]}
        if not self.minimal_ack:
            data["filters"] = {"evolution": {}}
            data["epochs"] = {channel: f"{self.prefix}-{channel}" for channel in ALL_CHANNELS}
            data["seq"] = {
                channel: self.seq if channel == "evolution" else 0 for channel in ALL_CHANNELS
            }
            data["run"] = {"state": "idle", "generation": -1, "parameters": RUN_PARAMETERS}
        message = {
            "id": f"{self.prefix}-a{self.acks}",
            "type": "ack",
            "timestamp": _iso(time.time()),
            "reply_to": reply_to,
            "data": data,
        }
        return json.dumps(message, separators=(",", ":"))

    async def handler(self, ws: ServerConnection) -> None:
        try:
            async for message in ws:
                request = json.loads(message)
                if request.get("type") == "subscribe":
                    self.connections.add(ws)
                    await ws.send(self.ack(request.get("id")))
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


async def publish_in_turn(contenders: list[Contender], rate: float, count: int) -> list[int]:
    """Publish ``count`` messages at ``rate`` per second, the two ``contenders`` taking turns
    in the order ABBA; return how many each published."""
    loop = asyncio.get_running_loop()
    sent = [0, 0]
    start = loop.time()
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        turn = i % 2 if i // 2 % 2 == 0 else 1 - i % 2
        contenders[turn].publish(sent[turn], evolution_data(sent[turn], time.time()))
        sent[turn] += 1
    return sent


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

FLOOD_BLOCK_S = 0.5  # the servers take turns flooding in blocks of this many seconds


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
    ack_bytes: int = 0
    # per batch size
    msgs_per_s: dict[int, float] = field(default_factory=dict)
    cpu_us_per_delivery: dict[int, float] = field(default_factory=dict)
    server_cpu_pct: dict[int, float] = field(default_factory=dict)
    client_cpu_pct: dict[int, float] = field(default_factory=dict)
    published: dict[int, int] = field(default_factory=dict)
    delivered: dict[int, int] = field(default_factory=dict)
    lost: dict[int, int] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)


@dataclass
class Flood:
    """Sums over one server's flood blocks at one batch size."""

    published: int = 0
    delivered: int = 0
    span_s: float = 0.0
    cpu_s: float = 0.0
    client_cpu_s: float = 0.0


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _blocks(total_s: float, block_s: float) -> int:
    return max(round(total_s / block_s), 1)


async def run_pair(
    subscribers: int, repeat: int, settings: Settings, profiler: cProfile.Profile | None
) -> list[Run]:
    """Start both servers, each with its fleet; measure them in turns; stop everything.

    The servers take turns in the order ABBA, so whatever else the machine does falls on
    both alike: event by event for latency, in blocks of ``FLOOD_BLOCK_S`` for throughput
    (each block ends once its fleet has everything, so the next starts on a quiet machine).
    """
    keys = list(CONTENDERS) if repeat % 2 == 0 else list(reversed(CONTENDERS))
    contenders: dict[str, Contender] = {key: CONTENDERS[key]() for key in keys}
    fleets: dict[str, FleetProcess] = {}
    runs = {key: Run(key, subscribers, repeat) for key in keys}

    def turns(block: int) -> list[str]:
        return keys if block % 2 == 0 else keys[::-1]

    try:
        for key, contender in contenders.items():
            await contender.start()
            fleets[key] = await FleetProcess.start(
                contender.url, subscribers, SECRET, user_prefix=f"{key}{repeat}"
            )
            runs[key].ack_bytes = fleets[key].ready.get("ack_bytes", 0)
        clients = {key: psutil.Process(fleet.pid) for key, fleet in fleets.items()}

        # Latency: one event every 1/rate s, the servers in turn.
        for fleet in fleets.values():
            await fleet.command("mode", mode="latency")
        gc.collect()
        count = max(round(settings.rate * settings.latency_s), 2)
        published = await publish_in_turn(list(contenders.values()), settings.rate, count)
        sent = dict(zip(keys, published, strict=True))
        for key, fleet in fleets.items():
            stats = await fleet.wait_for_count(sent[key] * subscribers)
            run = runs[key]
            run.p50_ms, run.p99_ms, run.max_ms = stats["p50_ms"], stats["p99_ms"], stats["max_ms"]
            run.latency_expected, run.latency_received = sent[key] * subscribers, stats["received"]

        # Throughput, per batch size.
        flood_blocks = _blocks(settings.flood_s, FLOOD_BLOCK_S)
        block_s = settings.flood_s / flood_blocks
        limit = max(settings.max_deliveries // subscribers // flood_blocks, 1)
        for batch in settings.batches:
            sums = {key: Flood() for key in keys}
            for block in range(flood_blocks):
                for key in turns(block):
                    fleet, total = fleets[key], sums[key]
                    await fleet.command("mode", mode="count")
                    gc.collect()
                    client_cpu0, cpu0, wall0 = _cpu(clients[key]), time.process_time(), time.time()
                    if profiler is not None and key == "tdevlab":
                        profiler.enable()
                    published = await publish_flood(contenders[key], batch, block_s, limit)
                    counts = await fleet.wait_for_count(published * subscribers, stats=False)
                    if profiler is not None and key == "tdevlab":
                        profiler.disable()
                    total.cpu_s += time.process_time() - cpu0
                    total.client_cpu_s += _cpu(clients[key]) - client_cpu0
                    total.span_s += max(counts["last"] - wall0, 1e-9)
                    total.published += published
                    total.delivered += counts["received"]
            for key, total in sums.items():
                run = runs[key]
                run.published[batch] = total.published
                run.delivered[batch] = total.delivered
                run.lost[batch] = total.published * subscribers - total.delivered
                run.msgs_per_s[batch] = total.delivered / total.span_s
                run.cpu_us_per_delivery[batch] = total.cpu_s / max(total.delivered, 1) * 1e6
                run.server_cpu_pct[batch] = total.cpu_s / total.span_s * 100
                run.client_cpu_pct[batch] = total.client_cpu_s / total.span_s * 100
        for key, fleet in fleets.items():
            runs[key].closes = (await fleet.command("stats"))["closes"]
    finally:
        for fleet in fleets.values():
            await fleet.quit()
        for contender in contenders.values():
            await contender.stop()
    return [runs[key] for key in CONTENDERS]


def describe(run: Run) -> str:
    parts = [
        f"{run.key:7} n={run.subscribers:4} rep {run.repeat + 1}:",
        f"p50 {run.p50_ms:.1f} ms p99 {run.p99_ms:.1f} ms max {run.max_ms:.1f} ms"
        f" ({run.latency_received}/{run.latency_expected}; ack {run.ack_bytes} B)",
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
    """Both servers at every subscriber count, repeated; return the runs."""
    runs = []
    for repeat in range(settings.repeats):
        for subscribers in settings.subscribers:
            pair = await run_pair(subscribers, repeat, settings, profiler)
            load = load_average()
            for run in pair:
                print(f"{describe(run)} (load {load})", file=sys.stderr, flush=True)
            runs.extend(pair)
    return runs


# -- results ---------------------------------------------------------------------------------

# (name, Run attribute, batch size or None, format, the better direction for tdevlab / bare)
Measure = tuple[str, str, int | None, str, str]


def measures(settings: Settings) -> list[Measure]:
    out: list[Measure] = [
        ("p50 ms (latency)", "p50_ms", None, ".1f", "<="),
        ("p99 ms (latency)", "p99_ms", None, ".1f", "<="),
    ]
    for batch in settings.batches:
        out.append((f"delivered msg/s (k={batch})", "msgs_per_s", batch, ",.0f", ">="))
    for batch in settings.batches:
        out.append((f"server CPU us/delivery (k={batch})", "cpu_us_per_delivery", batch, ".2f", ""))
    return out


def _value(run: Run, attribute: str, batch: int | None) -> float:
    value = getattr(run, attribute)
    return float(value if batch is None else value[batch])


def summarize(runs: list[Run], settings: Settings) -> list[dict[str, Any]]:
    """Per subscriber count and measure: each server's median over the repeats, and the
    median, min and max of tdevlab / bare within a repeat (the two ran side by side)."""
    out = []
    for subscribers in settings.subscribers:
        pairs = [
            (
                next(
                    r
                    for r in runs
                    if r.key == "bare" and r.subscribers == subscribers and r.repeat == i
                ),
                next(
                    r
                    for r in runs
                    if r.key == "tdevlab" and r.subscribers == subscribers and r.repeat == i
                ),
            )
            for i in range(settings.repeats)
        ]
        for name, attribute, batch, spec, better in measures(settings):
            bare = [_value(b, attribute, batch) for b, _ in pairs]
            ours = [_value(t, attribute, batch) for _, t in pairs]
            ratios = [t / b for b, t in zip(bare, ours, strict=True) if b > 0]
            out.append(
                {
                    "subscribers": subscribers,
                    "measure": name,
                    "format": spec,
                    "better": better,
                    "bare": median(bare),
                    "tdevlab": median(ours),
                    "ratio": median(ratios),
                    "ratio_min": min(ratios, default=math.nan),
                    "ratio_max": max(ratios, default=math.nan),
                }
            )
    return out


def table_rows(summary: list[dict[str, Any]], settings: Settings) -> list[list[str]]:
    rows = [
        [
            "subscribers",
            "measure",
            BareContender.label,
            TdevlabContender.label,
            "tdevlab / bare",
            f"min-max of {settings.repeats}",
        ]
    ]
    for s in summary:
        rows.append(
            [
                str(s["subscribers"]),
                s["measure"],
                format(s["bare"], s["format"]),
                format(s["tdevlab"], s["format"]),
                f"{s['ratio']:.2f}",
                f"{s['ratio_min']:.2f}-{s['ratio_max']:.2f}",
            ]
        )
    return rows


def diagnostic_rows(runs: list[Run], settings: Settings) -> list[list[str]]:
    header = ["subscribers", "server"]
    for batch in settings.batches:
        header += [f"server CPU % (k={batch})", f"clients CPU % (k={batch})", f"lost (k={batch})"]
    header.append("lost (latency)")
    rows = [header]
    for subscribers in settings.subscribers:
        for key in CONTENDERS:
            mine = [r for r in runs if r.key == key and r.subscribers == subscribers]
            row = [str(subscribers), key]
            for batch in settings.batches:
                row += [
                    f"{median([r.server_cpu_pct[batch] for r in mine]):.0f}",
                    f"{median([r.client_cpu_pct[batch] for r in mine]):.0f}",
                    str(sum(r.lost[batch] for r in mine)),
                ]
            row.append(str(sum(r.latency_expected - r.latency_received for r in mine)))
            rows.append(row)
    return rows


def checks(summary: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """tdevlab / bare: latency <= 1 and throughput >= 1 in the median of the repeats, at
    every subscriber count; and tdevlab's p99 < 50 ms at 1000 subscribers."""
    out = []
    for s in summary:
        better = s["better"]
        if not better:
            continue
        value, low, high = s["ratio"], s["ratio_min"], s["ratio_max"]
        passed = value <= 1.0 if better == "<=" else value >= 1.0
        out.append(
            {
                "name": f"tdevlab / bare, {s['measure']}, {s['subscribers']} subscribers",
                "value": value,
                "spread": (low, high),
                "crosses": low < 1.0 < high,
                "target": f"{better} 1.00",
                "status": "PASS" if passed else "FAIL",
            }
        )
    for s in summary:
        if s["subscribers"] == 1000 and s["measure"].startswith("p99"):
            p99 = s["tdevlab"]
            out.append(
                {
                    "name": f"tdevlab {s['measure']} at 1000 subscribers (median)",
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
    parser.add_argument("--repeats", type=int, default=5, help="runs of both servers, paired")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="events/s in the latency phase, servers in turn"
    )
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="both servers")
    parser.add_argument("--flood-seconds", type=float, default=3.0)
    parser.add_argument("--max-deliveries", type=int, default=600_000, help="bound per flood phase")
    parser.add_argument(
        "--minimal-bare-ack",
        action="store_true",
        help="the bare server acks a subscribe in ~150 bytes instead of tdevlab's fields",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--profile", type=Path, metavar="PATH", help="cProfile tdevlab floods")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers, args.repeats = "20", 1
        args.latency_seconds, args.flood_seconds = 0.5, 0.2
    if args.repeats < 1 or args.rate <= 0 or args.latency_seconds <= 0 or args.flood_seconds <= 0:
        parser.error("--repeats must be >= 1; --rate and the seconds > 0")
    return args


async def amain(args: argparse.Namespace) -> int:
    BareContender.minimal_ack = args.minimal_bare_ack
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
    info["load_average"] = load_average()
    sizes = message_sizes()
    print(
        f"fan-out: subscribers {settings.subscribers}, {settings.repeats} repeats; latency: "
        f"{settings.rate:g} events/s for {settings.latency_s:g} s, the servers in turn; floods "
        f"of k={settings.batches} per loop turn for {settings.flood_s:g} s per server; "
        f"message bytes {sizes}"
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
    print(format_plain(diagnostic_rows(runs, settings)))
    print()
    report_checks(rows, results, elapsed, args.markdown)
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
            "summary": summary,
            "checks": results,
            "elapsed_s": elapsed,
        }
        write_json(args.json, payload)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables; return 0 once it ran (targets are reported)."""
    args = parse_args(argv)
    quiet_logs()
    raise_fd_limit()
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
