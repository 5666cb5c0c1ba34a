"""Benchmark: a stalled reader is cut off within its budget and does not slow the others.

What is measured
----------------
A tdevlab :class:`EvolutionServer` runs in this process (``port=0``, ``metrics_interval=0``,
an engine that is never started, the default ``Limits``: a 1 MiB outbound budget). A
separate client process (``benchmarks/_clients.py``) opens 100 ordinary subscribers
(``websockets.asyncio.client.connect``, header auth, one user each, subscribed to
``evolution``) and, in half of the runs, one *stalled reader*: a raw TCP socket that does a
real WebSocket handshake with an ``Authorization: Bearer`` header, subscribes to
``evolution``, reads the ack, and never reads again (no transport or thread reads it, so the
kernel's buffers fill and the server's writes back up).

The server publishes ~20 KB ``evolution_update`` events (the spec's fields, ``sent_at``
and a ``fitness_history`` list) at ``--rate`` per second for ``--seconds`` seconds, through
``server.hub.publish`` on its loop. Per run it records:

* the 100 subscribers' publish-to-receive latency (p50, p99 over every delivery);
* with the stalled reader: when the server cut it off (``Connection.aborted``, polled every
  5 ms on the server's loop; seconds from the first publish), when its connection left
  ``server.hub.connections``, the most bytes the server held for it (pending frames plus the
  transport's write buffer, sampled every 5 ms), and, after the run, what the stalled socket
  gets when it finally reads: the bytes the kernel buffers had absorbed, then EOF or a
  reset (proof the server really closed it);
* the server process's RSS (psutil) before publishing, its maximum while publishing
  (sampled every 100 ms), and after the run once the clients left and ``gc.collect()`` ran.

Runs alternate without / with the stalled reader (``--repeats`` of each, default 3); the
table shows medians. PASS/FAIL: the stalled reader was cut off in every run that had one,
the median p99 with it is at most 1.5x the median p99 without it, and the RSS grew by less
than 50 MB over the whole benchmark (first baseline to last "after") and within each run.

Run it::

    python benchmarks/stalled_reader.py               # about a minute
    python benchmarks/stalled_reader.py --markdown --json stalled.json
    python benchmarks/stalled_reader.py --quick       # a smoke run (~4 s)
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
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

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
from tdevlab.server.hub import Connection

SECRET = "stalled-reader-benchmark-secret-long-enough"
STALLED_USER = "stalled-reader"
P99_RATIO_TARGET = 1.5
RSS_GROWTH_TARGET_MB = 50.0
MB = 1024 * 1024


@dataclass
class Settings:
    subscribers: int
    rate: float
    seconds: float
    event_bytes: int
    repeats: int
    drain_s: float = 30.0  # how long the stalled socket may read what the kernel kept


@dataclass
class Run:
    stalled: bool
    repeat: int
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    expected: int = 0
    received: int = 0
    event_bytes: int = 0
    cut_off_s: float | None = None
    released_s: float | None = None
    max_held_bytes: int = 0
    frames_written_to_stalled: int = 0
    stalled_end: str = ""
    stalled_backlog_bytes: int = 0
    rss_before_mb: float = 0.0
    rss_max_mb: float = 0.0
    rss_after_mb: float = 0.0
    budget_bytes: int = 0


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / MB


class Monitor:
    """Watches the stalled reader's connection and the RSS from the server's loop."""

    def __init__(self, server: EvolutionServer) -> None:
        self.server = server
        self.target: Connection | None = None
        self.started = 0.0
        self.cut_off_s: float | None = None
        self.released_s: float | None = None
        self.max_held = 0
        self.rss_max = 0.0

    def find(self) -> Connection | None:
        for connection in self.server.hub.connections:
            claims = connection.session.claims
            if claims is not None and claims.user == STALLED_USER:
                return connection
        return None

    async def watch(self) -> None:
        self.started = time.time()
        next_rss = 0.0
        while True:
            now = time.time()
            if now >= next_rss:
                self.rss_max = max(self.rss_max, rss_mb())
                next_rss = now + 0.1
            if self.target is None:
                self.target = self.find()
            target = self.target
            if target is not None:
                transport = target.ws.transport
                buffered = transport.get_write_buffer_size() if transport is not None else 0
                self.max_held = max(self.max_held, target.queued_bytes + buffered)
                if target.aborted and self.cut_off_s is None:
                    self.cut_off_s = now - self.started
                if self.released_s is None and target not in self.server.hub.connections:
                    self.released_s = now - self.started
            await asyncio.sleep(0.005)


async def publish_paced(server: EvolutionServer, settings: Settings) -> tuple[int, int]:
    """Publish big events at the set rate; return (count, bytes of one encoded event)."""
    loop = asyncio.get_running_loop()
    count = max(int(settings.rate * settings.seconds), 1)
    size = 0
    start = loop.time()
    for i in range(count):
        delay = start + i / settings.rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        data = evolution_data(i, time.time(), padding=settings.event_bytes)
        payload = server.hub.publish(
            "evolution", "evolution_update", data, generation=i, fitness=data["best_fitness"]
        )
        size = len(payload)
    return count, size


async def run_one(stalled: bool, repeat: int, settings: Settings) -> Run:
    """One server, 100 subscribers (and maybe a stalled reader), one publishing period."""
    server = EvolutionServer(
        Engine(seed=1, population_size=20),
        host="127.0.0.1",
        port=0,
        secret=SECRET,
        metrics_interval=0,
    )
    await server.__aenter__()
    run = Run(stalled, repeat, budget_bytes=server.limits.outbound_budget_bytes)
    fleet: FleetProcess | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        fleet = await FleetProcess.start(
            server.url,
            settings.subscribers,
            SECRET,
            user_prefix=f"s{repeat}{int(stalled)}",
            stalled=stalled,
        )
        await fleet.command("mode", mode="latency")
        gc.collect()
        run.rss_before_mb = rss_mb()
        monitor = Monitor(server)
        watcher = asyncio.ensure_future(monitor.watch())
        published, run.event_bytes = await publish_paced(server, settings)
        stats = await fleet.wait_for_count(published * settings.subscribers)
        watcher.cancel()
        run.p50_ms, run.p99_ms, run.max_ms = stats["p50_ms"], stats["p99_ms"], stats["max_ms"]
        run.expected, run.received = published * settings.subscribers, stats["received"]
        run.rss_max_mb = monitor.rss_max
        if stalled:
            run.cut_off_s, run.released_s = monitor.cut_off_s, monitor.released_s
            run.max_held_bytes = monitor.max_held
            if monitor.target is not None:
                run.frames_written_to_stalled = monitor.target.sent
            drained = await fleet.command(
                "drain_stalled", wait_s=settings.drain_s + 10.0, drain_timeout=settings.drain_s
            )
            run.stalled_end = drained["end"]
            run.stalled_backlog_bytes = drained["backlog_bytes"]
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if fleet is not None:
            await fleet.quit()
        await server.aclose()
    gc.collect()
    run.rss_after_mb = rss_mb()
    return run


def describe(run: Run) -> str:
    text = (
        f"{'stalled' if run.stalled else 'clean  '} rep {run.repeat + 1}: p50 {run.p50_ms:.1f} ms"
        f" p99 {run.p99_ms:.1f} ms max {run.max_ms:.1f} ms ({run.received}/{run.expected})"
        f" rss {run.rss_before_mb:.0f}/{run.rss_max_mb:.0f}/{run.rss_after_mb:.0f} MB"
    )
    if run.stalled:
        cut = "never" if run.cut_off_s is None else f"{run.cut_off_s:.2f} s"
        text += (
            f" | cut off {cut}, held max {run.max_held_bytes / 1024:.0f} KiB,"
            f" frames written {run.frames_written_to_stalled}, socket end {run.stalled_end}"
            f" after {run.stalled_backlog_bytes / 1024:.0f} KiB of backlog"
        )
    return text


def summarize(runs: list[Run], baseline_rss: float) -> dict[str, Any]:
    clean = [r for r in runs if not r.stalled]
    stalled = [r for r in runs if r.stalled]
    cut = [r.cut_off_s for r in stalled if r.cut_off_s is not None]
    released = [r.released_s for r in stalled if r.released_s is not None]
    return {
        "clean_p50_ms": median([r.p50_ms for r in clean]),
        "clean_p99_ms": median([r.p99_ms for r in clean]),
        "stalled_p50_ms": median([r.p50_ms for r in stalled]),
        "stalled_p99_ms": median([r.p99_ms for r in stalled]),
        "cut_off_runs": len(cut),
        "stalled_runs": len(stalled),
        "cut_off_s": median(cut),
        "released_s": median(released),
        "max_held_bytes": max((r.max_held_bytes for r in stalled), default=0),
        "backlog_bytes": median([float(r.stalled_backlog_bytes) for r in stalled]),
        "socket_ends": sorted({r.stalled_end for r in stalled}),
        "lost_clean": sum(r.expected - r.received for r in clean),
        "lost_stalled": sum(r.expected - r.received for r in stalled),
        "rss_baseline_mb": baseline_rss,
        "rss_max_mb": max(r.rss_max_mb for r in runs),
        "rss_final_mb": runs[-1].rss_after_mb,
        "rss_max_growth_in_run_mb": max(r.rss_max_mb - r.rss_before_mb for r in runs),
        "event_bytes": runs[0].event_bytes,
        "budget_bytes": runs[0].budget_bytes,
    }


def table_rows(s: dict[str, Any], runs: list[Run], settings: Settings) -> list[list[str]]:
    rows = [
        [
            "run",
            "subscribers' p50 ms",
            "p99 ms",
            "cut off after s",
            "most held KiB",
            "RSS before / max / after MB",
        ]
    ]
    for label, key, stalled in (
        (f"{settings.subscribers} subscribers", "clean", False),
        (f"{settings.subscribers} subscribers + 1 stalled reader", "stalled", True),
    ):
        rows.append(
            [
                label,
                f"{s[f'{key}_p50_ms']:.1f}",
                f"{s[f'{key}_p99_ms']:.1f}",
                f"{s['cut_off_s']:.2f} ({s['cut_off_runs']}/{s['stalled_runs']})"
                if stalled
                else "-",
                f"{s['max_held_bytes'] / 1024:.0f}" if stalled else "-",
                rss_cell([r for r in runs if r.stalled is stalled]),
            ]
        )
    return rows


def rss_cell(runs: list[Run]) -> str:
    """Median RSS before, the highest while publishing, median after (MB)."""
    before = median([r.rss_before_mb for r in runs])
    after = median([r.rss_after_mb for r in runs])
    return f"{before:.0f} / {max(r.rss_max_mb for r in runs):.0f} / {after:.0f}"


def checks(s: dict[str, Any]) -> list[dict[str, Any]]:
    ratio = s["stalled_p99_ms"] / s["clean_p99_ms"]
    growth = s["rss_final_mb"] - s["rss_baseline_mb"]
    in_run = s["rss_max_growth_in_run_mb"]
    return [
        {
            "name": "stalled reader cut off (runs)",
            "value": s["cut_off_runs"],
            "target": f"== {s['stalled_runs']}",
            "status": "PASS" if s["cut_off_runs"] == s["stalled_runs"] else "FAIL",
        },
        {
            "name": "p99 with / without the stalled reader",
            "value": ratio,
            "target": f"<= {P99_RATIO_TARGET}",
            "status": "PASS" if ratio <= P99_RATIO_TARGET else "FAIL",
        },
        {
            "name": "RSS growth over the benchmark (MB)",
            "value": growth,
            "target": f"< {RSS_GROWTH_TARGET_MB:g}",
            "status": "PASS" if growth < RSS_GROWTH_TARGET_MB else "FAIL",
        },
        {
            "name": "RSS growth within a run, worst (MB)",
            "value": in_run,
            "target": f"< {RSS_GROWTH_TARGET_MB:g}",
            "status": "PASS" if in_run < RSS_GROWTH_TARGET_MB else "FAIL",
        },
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="publishing per run")
    parser.add_argument("--event-bytes", type=int, default=20_000, help="padding per event")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    args = parser.parse_args(argv)
    if args.quick:
        # Enough bytes (~9 MB) to fill the stalled socket's kernel buffers and the budget.
        args.subscribers, args.rate, args.seconds, args.repeats = 20, 100.0, 1.5, 1
        args.event_bytes = 60_000
    return args


async def amain(args: argparse.Namespace) -> int:
    settings = Settings(
        args.subscribers,
        args.rate,
        args.seconds,
        args.event_bytes,
        args.repeats,
        drain_s=5.0 if args.quick else 30.0,
    )
    info = versions("tdevlab", "websockets")
    info["load_average"] = tuple(round(x, 2) for x in os.getloadavg())
    print(
        f"stalled reader: {settings.subscribers} subscribers, ~{settings.event_bytes} B events "
        f"at {settings.rate:g}/s for {settings.seconds:g} s per run, {settings.repeats} runs "
        "without and with the stalled reader, alternating"
    )
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    print()
    gc.collect()
    baseline = rss_mb()
    started = time.perf_counter()
    runs = []
    for repeat in range(settings.repeats):
        for stalled in (False, True):
            run = await run_one(stalled, repeat, settings)
            print(describe(run), file=sys.stderr, flush=True)
            runs.append(run)
    elapsed = time.perf_counter() - started
    s = summarize(runs, baseline)
    rows = table_rows(s, runs, settings)
    results = checks(s)

    print(format_plain(rows))
    print()
    print(
        f"event {s['event_bytes']} bytes; budget {s['budget_bytes']} bytes; stalled connection "
        f"left the hub after {s['released_s']:.2f} s (median); the stalled socket then read "
        f"{s['backlog_bytes'] / 1024:.0f} KiB (median) the kernel had buffered and ended with "
        f"{', '.join(s['socket_ends'])}; deliveries lost to the {settings.subscribers}: "
        f"{s['lost_clean']} "
        f"without, {s['lost_stalled']} with the stalled reader"
    )
    print(
        f"server RSS: {s['rss_baseline_mb']:.1f} MB before the first run, at most "
        f"{s['rss_max_mb']:.1f} MB, {s['rss_final_mb']:.1f} MB after the last run"
    )
    print()
    report_checks(rows, results, elapsed, args.markdown)
    if args.json is not None:
        payload = {
            "settings": asdict(settings),
            "versions": info,
            "runs": [asdict(r) for r in runs],
            "summary": s,
            "checks": results,
            "elapsed_s": elapsed,
        }
        write_json(args.json, payload)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; return 0 once it ran (targets are reported)."""
    args = parse_args(argv)
    quiet_logs()
    raise_fd_limit()
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
