"""Benchmark: a real client's service while unauthenticated connections flood the server.

What is measured
----------------
A tdevlab :class:`EvolutionServer` runs in this process (``autostart``; ``Engine(seed=1)``,
the default problem and population of 100; the run paced at ``--interval`` seconds per
generation, 0.02 by default: 50 generations/s, a run watched live; ``--interval 0`` runs
flat out). Two separate processes talk to it:

* the **real client** (``abuse.py --client-mode``): one connection with an
  ``Authorization: Bearer`` header, subscribed to ``evolution``; it counts the
  ``evolution_update`` events it receives (its generation rate) and sends a ``ping`` every
  20 ms, timing each ``pong`` (its ping latency);
* the **attacker** (``abuse.py --attacker-mode``): ``--attackers`` (30) connections that
  never authenticate, each sending ``{"type":"ping","id":1,"pad":"x"*1048000}`` in a loop,
  and opening a new connection as soon as the server closes or refuses one.

Each repeat measures a window of ``--seconds`` without the attack, then one with it (after
one second for the flood to build up). Before every attack window this process also tries
the parameter bomb as an operator: ``stop``, ``set_parameters`` with ``population_size``
400000 (which must be refused), then ``start`` (the run goes on with its population as it
was). Throughout, the server's RSS is sampled every 0.1 s, its CPU time read per window,
and its event loop's lag sampled every 5 ms (how late a sleeper wakes: the server's own
stalls, apart from the client's and the machine's); the attacker reports the connections it
opened, how they ended and the bytes it managed to send; the server's metrics give
``rejected_connections``.

Reported: per kind of window, the medians over the repeats of the real client's
generations/s and ping p50/p99, the server's highest RSS and its CPU share, and the
attack's own numbers. PASS/FAIL (the targets of the hardening): under the flood the real
client keeps >= 90 % of its generation rate, its ping p99 stays <= 2x the unloaded one,
the server's RSS stays within 50 MB of the window just before (the in-memory run grows
with its generations, so later windows start higher), and the parameter bomb is refused.
A missed target is a result, not a failed exit. The machine's load average is printed at
the start and the end: other work on a small machine moves these numbers.

Run it::

    python benchmarks/abuse.py                      # 3 repeats of 10 s + 10 s, about 80 s
    python benchmarks/abuse.py --markdown --json abuse.json
    python benchmarks/abuse.py --quick              # a smoke run (~10 s)
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
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from benchmarks._clients import median, percentile, quiet_logs, raise_fd_limit
from benchmarks._tables import format_plain, load_average, report_checks, versions, write_json
from tdevlab import Engine
from tdevlab.server import EvolutionServer

SECRET = "abuse-benchmark-secret-long-enough-for-hs256!"
PAD = 1_048_000  # the flood's padding: its frames are just under websockets' 1 MiB default
BOMB_POPULATION = 400_000
RATE_TARGET = 0.90
P99_RATIO_TARGET = 2.0
RSS_TARGET_MB = 50.0
PING_EVERY_S = 0.02
LAG_EVERY_S = 0.005  # the server loop's lag is sampled this often
MB = 1024 * 1024
SCRIPT = os.path.abspath(__file__)

# -- the real client (a process) --------------------------------------------------------------


class RealClient:
    """Counts evolution updates and times pings on one authenticated connection."""

    def __init__(self) -> None:
        self.events = 0
        self.window_start = time.monotonic()
        self.rtts: list[float] = []
        self.sent: dict[str, float] = {}
        self.lost = 0

    def window(self) -> None:
        self.events, self.rtts, self.lost = 0, [], 0
        self.sent.clear()
        self.window_start = time.monotonic()

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        late = [k for k, t in self.sent.items() if now - t > 2.0]
        return {
            "events": self.events,
            "seconds": now - self.window_start,
            "pings": len(self.rtts),
            "lost": self.lost + len(late),
            "p50_ms": percentile(self.rtts, 50) * 1e3,
            "p99_ms": percentile(self.rtts, 99) * 1e3,
            "max_ms": max(self.rtts, default=float("nan")) * 1e3,
        }

    def received(self, frame: str | bytes) -> None:
        text = frame if isinstance(frame, str) else frame.decode()
        if '"evolution_update"' in text:
            self.events += 1
        elif '"pong"' in text:
            rid = json.loads(text).get("reply_to")
            sent = self.sent.pop(rid, None)
            if sent is not None:
                self.rtts.append(time.monotonic() - sent)


async def client_main(args: argparse.Namespace) -> None:
    """Connect, subscribe, then answer ``window`` / ``stats`` / ``quit`` lines on stdin."""
    quiet_logs()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    state = RealClient()
    headers = {"Authorization": f"Bearer {args.token}"}
    async with (
        asyncio.timeout(args.timeout),
        connect(args.url, additional_headers=headers, compression=None, max_size=None) as ws,
    ):
        await ws.send(json.dumps({"type": "subscribe", "channel": "evolution", "id": "s"}))

        async def read() -> None:
            async for frame in ws:
                state.received(frame)

        async def ping() -> None:
            n = 0
            while True:
                n += 1
                rid = f"p{n}"
                state.sent[rid] = time.monotonic()
                await ws.send(json.dumps({"type": "ping", "id": rid}))
                await asyncio.sleep(PING_EVERY_S)

        tasks = [asyncio.ensure_future(read()), asyncio.ensure_future(ping())]
        print(json.dumps({"ready": True}), flush=True)
        try:
            while line := await stdin.readline():
                command = json.loads(line)["cmd"]
                if command == "window":
                    state.window()
                    print(json.dumps({"ok": True}), flush=True)
                elif command == "stats":
                    print(json.dumps(state.stats()), flush=True)
                else:
                    break
        finally:
            for task in tasks:
                task.cancel()


# -- the attacker (a process) -----------------------------------------------------------------


async def flooder(url: str, payload: str, tally: Counter[str]) -> None:
    """One flooding connection, reopened as soon as it ends (the caller cancels it)."""
    while True:
        try:
            async with connect(
                url,
                compression=None,
                open_timeout=5,
                close_timeout=1,
                ping_interval=None,
                max_size=None,
            ) as ws:
                tally["opened"] += 1
                while True:
                    await ws.send(payload)
                    tally["frames_sent"] += 1
                    await asyncio.sleep(0)  # read what the server says (a close) between frames
        except InvalidStatus as exc:
            tally[f"refused_http_{exc.response.status_code}"] += 1
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            tally[f"closed_{code}"] += 1
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            tally[f"error_{type(exc).__name__}"] += 1
            await asyncio.sleep(0.01)


async def attacker_main(args: argparse.Namespace) -> None:
    """Flood for ``--seconds``, then print the tally as one JSON line."""
    quiet_logs()
    raise_fd_limit()
    payload = json.dumps({"type": "ping", "id": 1, "pad": "x" * args.pad})
    tally: Counter[str] = Counter()
    started = time.perf_counter()
    tasks = [
        asyncio.ensure_future(flooder(args.url, payload, tally)) for _ in range(args.attackers)
    ]
    await asyncio.sleep(args.seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out: dict[str, Any] = dict(tally)
    out["seconds"] = time.perf_counter() - started
    out["frame_bytes"] = len(payload)
    out["cpu_s"] = sum(psutil.Process().cpu_times()[:2])
    print(json.dumps(out), flush=True)


# -- the driver (this process, with the server) -------------------------------------------------


@dataclass
class Settings:
    seconds: float
    repeats: int
    attackers: int
    pad: int
    interval: float


@dataclass
class Window:
    attacked: bool
    repeat: int
    generations_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    pings: int = 0
    lost_pings: int = 0
    rss_max_mb: float = 0.0
    cpu_percent: float = 0.0
    lag_p99_ms: float = 0.0
    lag_max_ms: float = 0.0
    rejected: int = 0
    attack: dict[str, Any] = field(default_factory=dict)
    bomb: list[str] = field(default_factory=list)
    population_after_bomb: int = 0


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / MB


def cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


async def child(*argv: str) -> asyncio.subprocess.Process:
    """This script in another mode, as a child process with pipes."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )


async def ask(process: asyncio.subprocess.Process, cmd: str, wait_s: float = 20.0) -> Any:
    """Send a command line to the real client and read its answer."""
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(json.dumps({"cmd": cmd}).encode() + b"\n")
    await process.stdin.drain()
    async with asyncio.timeout(wait_s):
        line = await process.stdout.readline()
    if not line:
        raise RuntimeError("the real client ended")
    return json.loads(line)


async def end(process: asyncio.subprocess.Process) -> None:
    """Let a child exit (its stdin closed), or kill it after a grace period."""
    if process.stdin is not None and not process.stdin.is_closing():
        process.stdin.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


async def bomb(server: EvolutionServer) -> tuple[list[str], int]:
    """The parameter bomb as an operator: what each step got, and the population after."""
    headers = {"Authorization": f"Bearer {server.token('bomber', 'operator')}"}
    attempts = [
        {"type": "control", "action": "stop", "id": "b0"},
        {"type": "command", "cmd": "set_parameters", "id": "b1",
         "args": {"population_size": BOMB_POPULATION}},
        {"type": "control", "action": "start", "id": "b2"},
    ]  # fmt: skip
    answers = []
    async with connect(server.url, additional_headers=headers, max_size=None) as ws:
        for attempt in attempts:
            await ws.send(json.dumps(attempt))
            async with asyncio.timeout(10):
                while True:
                    reply = json.loads(await ws.recv())
                    if reply.get("reply_to") == attempt["id"]:
                        break
            if reply["type"] == "error":
                error = reply["error"]
                answers.append(f"{attempt.get('cmd') or attempt.get('action')}: refused, "
                               f"{error['code']}: {error['message'][:100]}")  # fmt: skip
            else:
                answers.append(f"{attempt.get('cmd') or attempt.get('action')}: accepted")
    return answers, server.engine.params.population_size


async def measure(
    server: EvolutionServer,
    real: asyncio.subprocess.Process,
    window: Window,
    settings: Settings,
) -> None:
    """One window: the real client's stats, the server's RSS, CPU and rejections."""
    gc.collect()
    rejected = server.stats.rejected
    await ask(real, "window")
    cpu, started = cpu_s(), time.monotonic()
    rss_max = rss_mb()
    lags: list[float] = []
    lagger = asyncio.ensure_future(loop_lag(lags))
    while time.monotonic() - started < settings.seconds:
        await asyncio.sleep(0.1)
        rss_max = max(rss_max, rss_mb())
    lagger.cancel()
    stats = await ask(real, "stats")
    window.lag_p99_ms = percentile(lags, 99) * 1e3
    window.lag_max_ms = max(lags, default=0.0) * 1e3
    window.cpu_percent = 100.0 * (cpu_s() - cpu) / (time.monotonic() - started)
    window.generations_per_s = stats["events"] / stats["seconds"]
    window.p50_ms, window.p99_ms, window.max_ms = stats["p50_ms"], stats["p99_ms"], stats["max_ms"]
    window.pings, window.lost_pings = stats["pings"], stats["lost"]
    window.rss_max_mb = rss_max
    window.rejected = server.stats.rejected - rejected


async def loop_lag(lags: list[float]) -> None:
    """Sample how late the server's event loop wakes a sleeper (its stalls, whatever the
    cause), into ``lags`` until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LAG_EVERY_S
        await asyncio.sleep(LAG_EVERY_S)
        lags.append(max(loop.time() - due, 0.0))


async def run(settings: Settings) -> list[Window]:
    """The server, the real client, and the windows without and with the attack, alternating."""
    server = EvolutionServer(
        Engine(seed=1),
        host="127.0.0.1",
        port=0,
        secret=SECRET,
        autostart=True,
        generation_interval=settings.interval,
        metrics_interval=1.0,
    )
    windows: list[Window] = []
    async with server:
        token = server.token("real-client", "viewer", ttl=24 * 3600)
        timeout = settings.repeats * (2 * settings.seconds + 10) + 60
        real = await child("--client-mode", "--url", server.url, "--token", token,
                           "--timeout", str(timeout))  # fmt: skip
        try:
            assert real.stdout is not None
            async with asyncio.timeout(30):
                assert json.loads(await real.stdout.readline())["ready"]
            await asyncio.sleep(1.0)  # the run and the client settle
            for repeat in range(settings.repeats):
                for attacked in (False, True):
                    window = Window(attacked, repeat)
                    attacker = None
                    if attacked:
                        attacker = await child(
                            "--attacker-mode", "--url", server.url,
                            "--attackers", str(settings.attackers), "--pad", str(settings.pad),
                            "--seconds", str(settings.seconds + 1.5),
                        )  # fmt: skip
                        window.bomb, window.population_after_bomb = await bomb(server)
                        await asyncio.sleep(1.0)  # the flood builds up
                    await measure(server, real, window, settings)
                    if attacker is not None:
                        assert attacker.stdout is not None
                        async with asyncio.timeout(60):
                            line = await attacker.stdout.readline()
                        window.attack = json.loads(line) if line else {}
                        await end(attacker)
                        await asyncio.sleep(1.0)  # refused connections drain away
                    print(describe(window), file=sys.stderr, flush=True)
                    windows.append(window)
        finally:
            with contextlib.suppress(Exception):
                await ask(real, "quit", wait_s=0.5)
            await end(real)
    return windows


def describe(w: Window) -> str:
    text = (
        f"{'attack ' if w.attacked else 'clean  '} rep {w.repeat + 1}: "
        f"{w.generations_per_s:.1f} gen/s, ping p50 {w.p50_ms:.2f} p99 {w.p99_ms:.2f} "
        f"max {w.max_ms:.1f} ms ({w.pings} pings, {w.lost_pings} lost), server loop lag p99 "
        f"{w.lag_p99_ms:.2f} max {w.lag_max_ms:.1f} ms, RSS max "
        f"{w.rss_max_mb:.0f} MB, server CPU {w.cpu_percent:.0f} %, rejected {w.rejected}"
    )
    if w.attacked:
        a = w.attack
        text += (
            f" | attacker: {a.get('opened', 0)} opened, "
            f"{sum(v for k, v in a.items() if k.startswith('refused'))} refused, "
            f"{a.get('frames_sent', 0)} frames sent, closes "
            f"{ {k: v for k, v in a.items() if k.startswith('closed')} }"
        )
    return text


def summarize(windows: list[Window]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, attacked in (("clean", False), ("attack", True)):
        ws = [w for w in windows if w.attacked is attacked]
        for name in ("generations_per_s", "p50_ms", "p99_ms", "cpu_percent", "lag_p99_ms"):
            out[f"{key}_{name}"] = median([getattr(w, name) for w in ws])
        out[f"{key}_rss_max_mb"] = median([w.rss_max_mb for w in ws])
        out[f"{key}_lost_pings"] = sum(w.lost_pings for w in ws)
        out[f"{key}_rejected_per_window"] = median([float(w.rejected) for w in ws])
    # Each attack window against the window without it just before: the memory store grows
    # with the generations whatever the clients do, so later windows start higher.
    growth = [
        a.rss_max_mb - c.rss_max_mb
        for c, a in zip(windows[::2], windows[1::2], strict=True)
        if a.attacked and not c.attacked
    ]
    out["rss_growth_median_mb"] = median(growth)
    out["rss_growth_worst_mb"] = max(growth)
    out["rss_first_mb"], out["rss_last_mb"] = windows[0].rss_max_mb, windows[-1].rss_max_mb
    attacks = [w.attack for w in windows if w.attacked]
    seconds = sum(a.get("seconds", 0.0) for a in attacks) or 1.0
    out["attack_opened_per_s"] = sum(a.get("opened", 0) for a in attacks) / seconds
    out["attack_refused_per_s"] = (
        sum(v for a in attacks for k, v in a.items() if k.startswith("refused")) / seconds
    )
    out["attack_mb_per_s"] = (
        sum(a.get("frames_sent", 0) * a.get("frame_bytes", 0) for a in attacks) / MB / seconds
    )
    out["attack_cpu_s_per_s"] = sum(a.get("cpu_s", 0.0) for a in attacks) / seconds
    ends: Counter[str] = Counter()
    for a in attacks:
        ends.update({k: v for k, v in a.items() if k.startswith(("closed", "refused", "error"))})
    out["attack_ends"] = dict(ends)
    bombs = [w for w in windows if w.attacked]
    out["bomb_answers"] = bombs[0].bomb if bombs else []
    out["bomb_refused"] = all(
        len(w.bomb) == 3
        and "refused" in w.bomb[1]
        and "accepted" in w.bomb[2]
        and w.population_after_bomb < 1000
        for w in bombs
    )
    out["population_after_bomb"] = bombs[-1].population_after_bomb if bombs else 0
    return out


def table_rows(s: dict[str, Any], settings: Settings) -> list[list[str]]:
    rows = [
        ["phase", "generations/s", "ping p50 ms", "ping p99 ms", "server loop lag p99 ms",
         "server RSS max MB", "server CPU %", "rejected conn/window"],
    ]  # fmt: skip
    for label, key in (
        ("no attack", "clean"),
        (f"{settings.attackers} unauthenticated flooders", "attack"),
    ):
        rows.append(
            [
                label,
                f"{s[f'{key}_generations_per_s']:.1f}",
                f"{s[f'{key}_p50_ms']:.2f}",
                f"{s[f'{key}_p99_ms']:.2f}",
                f"{s[f'{key}_lag_p99_ms']:.2f}",
                f"{s[f'{key}_rss_max_mb']:.0f}",
                f"{s[f'{key}_cpu_percent']:.0f}",
                f"{s[f'{key}_rejected_per_window']:.0f}",
            ]
        )
    return rows


def checks(s: dict[str, Any]) -> list[dict[str, Any]]:
    rate = s["attack_generations_per_s"] / s["clean_generations_per_s"]
    p99 = s["attack_p99_ms"] / s["clean_p99_ms"]
    rss = s["rss_growth_worst_mb"]
    return [
        {
            "name": "generation rate under the flood / without",
            "value": rate,
            "target": f">= {RATE_TARGET}",
            "status": "PASS" if rate >= RATE_TARGET else "FAIL",
        },
        {
            "name": "ping p99 under the flood / without",
            "value": p99,
            "target": f"<= {P99_RATIO_TARGET}",
            "status": "PASS" if p99 <= P99_RATIO_TARGET else "FAIL",
        },
        {
            "name": "server RSS max under the flood - just before it, worst (MB)",
            "value": rss,
            "target": f"<= {RSS_TARGET_MB:g}",
            "status": "PASS" if rss <= RSS_TARGET_MB else "FAIL",
        },
        {
            "name": "parameter bomb refused (population after)",
            "value": float(s["population_after_bomb"]),
            "target": "set_parameters refused, run restarted as it was",
            "status": "PASS" if s["bomb_refused"] else "FAIL",
        },
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per window")
    parser.add_argument("--repeats", type=int, default=3, help="windows of each kind")
    parser.add_argument("--attackers", type=int, default=30, help="flooding connections")
    parser.add_argument("--pad", type=int, default=PAD, help="padding of each flood frame")
    parser.add_argument("--interval", type=float, default=0.02, help="s between generations")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    # The child processes (this script in another role).
    parser.add_argument("--client-mode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--attacker-mode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 2.0, 1
    return args


async def amain(args: argparse.Namespace) -> int:
    settings = Settings(args.seconds, args.repeats, args.attackers, args.pad, args.interval)
    info = versions("tdevlab", "websockets")
    info["load_average"] = load_average()
    pace = f"paced at {1 / settings.interval:g}/s" if settings.interval > 0 else "flat out"
    frame = len(json.dumps({"type": "ping", "id": 1, "pad": "x" * settings.pad}))
    print(
        f"abuse: a real client (header auth, subscribed to evolution, a ping every "
        f"{PING_EVERY_S * 1e3:g} ms) on a run {pace}; {settings.repeats} x (a "
        f"{settings.seconds:g} s window without, then one with {settings.attackers} "
        f"unauthenticated connections each sending {frame}-byte pings in a loop, reconnecting "
        f"when closed); a parameter bomb (population_size {BOMB_POPULATION}) before each attack"
    )
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    print()
    started = time.perf_counter()
    windows = await run(settings)
    elapsed = time.perf_counter() - started
    s = summarize(windows)
    rows = table_rows(s, settings)
    results = checks(s)
    print(format_plain(rows))
    print()
    print(
        f"the attack: {s['attack_opened_per_s']:.0f} connections opened/s, "
        f"{s['attack_refused_per_s']:.0f} refused at the handshake/s, "
        f"{s['attack_mb_per_s']:.1f} MB/s of frames the attacker got into its sockets, its CPU "
        f"{100 * s['attack_cpu_s_per_s']:.0f} % of a core; how its connections ended: "
        f"{s['attack_ends']}"
    )
    print(f"lost pings (no pong in 2 s): {s['clean_lost_pings']} without, "
          f"{s['attack_lost_pings']} with the attack")  # fmt: skip
    print(
        f"server RSS: {s['rss_first_mb']:.0f} MB in the first window, {s['rss_last_mb']:.0f} MB "
        f"in the last (the in-memory run grows with its generations); under the flood "
        f"{s['rss_growth_median_mb']:+.1f} MB (median), {s['rss_growth_worst_mb']:+.1f} MB "
        "(worst) over the window just before"
    )
    print("parameter bomb: " + " | ".join(s["bomb_answers"]))
    print()
    report_checks(rows, results, elapsed, args.markdown)
    if args.json is not None:
        payload = {
            "settings": asdict(settings),
            "versions": info,
            "windows": [asdict(w) for w in windows],
            "summary": s,
            "checks": results,
            "elapsed_s": elapsed,
        }
        write_json(args.json, payload)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or one of its child processes); return 0 once it ran."""
    args = parse_args(argv)
    if args.client_mode:
        with contextlib.suppress(TimeoutError, KeyboardInterrupt, ConnectionClosed):
            asyncio.run(client_main(args))
        return 0
    if args.attacker_mode:
        asyncio.run(attacker_main(args))
        return 0
    quiet_logs()
    raise_fd_limit()
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
