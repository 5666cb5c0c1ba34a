"""Benchmark: get_lineage of depth 200 from a 10 000-generation SQLite store, population 200.

What is measured
----------------
A run of the default problem (``agent_design``) with the genetic algorithm, population 200,
seed 1, is recorded for 10 000 generations in a SQLite store (about 2 million agents; the
file is built once and reused from the temporary directory:
``tdevlab-bench/lineage-<generations>x<population>.db``). The store is then reopened and,
for the best agent of the last generation:

* ``store``: ``SQLiteStore.first_parent_line`` (per step a seek in ``lineage_first_agent``
  and the agent's values from its generation's row of the ``lineage`` table);
* ``engine``: ``Engine.lineage(agent, depth=200)`` (the line, the second parents beside it,
  the genes changed, agent names: the ``lineage`` message's data);
* ``server``: a ``get_lineage`` request with ``depth: 200`` to an ``EvolutionServer`` on
  127.0.0.1 serving that engine, timed from the request's send to its reply's arrival
  (JSON encoding, the socket and decoding included), by one websockets client;
* ``engine, whole line``: ``Engine.lineage(agent)`` with no depth (back to generation 0);
* ``engine, descendants``: ``Engine.lineage(ancestor, depth=200, descendants=True)`` for the
  agent's 100th ancestor (its first-parent descendants, at most 10 000).

Each is timed ``--repeats`` times after one untimed call (which warms SQLite's page cache
from the OS cache); the table gives the median, min and max wall-clock milliseconds, the
median CPU milliseconds of this process (the server and its client share it: its CPU is
both ends'), and the nodes returned, with the load average around the measurement (other
programs competing for the CPU stretch the wall-clock times). The target: the wall-clock
median of ``engine`` and of ``server`` below 50 ms.

Run it::

    python benchmarks/lineage.py               # builds the store the first time (~1 min)
    python benchmarks/lineage.py --markdown    # also a Markdown table for docs/benchmarks.md
    python benchmarks/lineage.py --quick       # a smoke run: 300 generations, population 50,
                                               # in a fresh temporary directory
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
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from benchmarks._tables import format_markdown, format_plain, versions
from tdevlab import Engine
from tdevlab.exceptions import StoreError
from tdevlab.server import EvolutionServer
from tdevlab.store import SQLiteStore

TARGET_MS = 50.0
DEPTH = 200
SECRET = "lineage-benchmark-secret-long-enough-for-hs256"


def store_path(generations: int, population: int) -> Path:
    """The cached store of this size, in the temporary directory."""
    folder = Path(tempfile.gettempdir()) / "tdevlab-bench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"lineage-{generations}x{population}.db"


def build(path: Path, generations: int, population: int) -> float:
    """Record the run into ``path`` unless a complete one is there; return seconds spent.

    Built under a name of this process's own, then renamed: benchmarks run at the same
    time never see each other's half-built file.
    """
    if path.exists():
        try:
            with SQLiteStore(path) as store:
                runs = store.runs()
            if runs and runs[0].last_generation == generations - 1:
                return 0.0
        except StoreError:
            pass  # not a store this tdevlab reads (an older schema): build it again
        path.unlink(missing_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    started = time.perf_counter()
    try:
        with Engine(seed=1, population_size=population, store=partial) as engine:
            for done, _ in enumerate(engine.run(generations=generations), 1):
                if done % 1000 == 0:
                    print(f"  built {done} generations", file=sys.stderr)
        with SQLiteStore(partial) as store:  # the WAL checkpointed into the file before the move
            store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.replace(partial, path)
    finally:
        for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            leftover.unlink(missing_ok=True)
    return time.perf_counter() - started


Samples = tuple[list[float], list[float]]  # wall and CPU milliseconds


def timed(call: Callable[[], Any], repeats: int) -> tuple[Samples, Any]:
    """Wall and CPU milliseconds of ``repeats`` calls after an untimed one; the last result."""
    result = call()
    wall, cpu = [], []
    for _ in range(repeats):
        started, used = time.perf_counter(), time.process_time()
        result = call()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    return (wall, cpu), result


async def over_the_server(engine: Engine, agent: str, repeats: int) -> tuple[Samples, int]:
    """Round trips of get_lineage depth 200 to a server on 127.0.0.1 (one client)."""
    server = EvolutionServer(engine, host="127.0.0.1", port=0, secret=SECRET)
    async with server:
        token = server.token("bench", "viewer")
        async with connect(
            server.url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None
        ) as ws:
            request = {"type": "get_lineage", "agent_id": agent, "depth": DEPTH}
            wall: list[float] = []
            cpu: list[float] = []
            nodes = 0
            for i in range(repeats + 1):
                started, used = time.perf_counter(), time.process_time()
                await ws.send(json.dumps({**request, "id": i}))
                while True:
                    reply = json.loads(await ws.recv())
                    if reply.get("reply_to") == i:
                        break
                if reply["type"] != "lineage":
                    raise RuntimeError(f"get_lineage failed: {reply}")
                if i:  # the first is untimed
                    wall.append((time.perf_counter() - started) * 1000)
                    cpu.append((time.process_time() - used) * 1000)
                nodes = len(reply["data"]["nodes"]["agent_id"])
    return (wall, cpu), nodes


def row(name: str, samples: Samples, nodes: int) -> list[str]:
    """A table row: wall median, min, max, CPU median (ms) and nodes."""
    wall, cpu = samples
    return [
        name,
        f"{statistics.median(wall):.2f}",
        f"{min(wall):.2f}",
        f"{max(wall):.2f}",
        f"{statistics.median(cpu):.2f}",
        str(nodes),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--generations", type=int, default=10_000, help="generations stored")
    parser.add_argument("--population", type=int, default=200, help="population size")
    parser.add_argument("--repeats", type=int, default=21, help="timed calls of each kind")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    if args.quick:
        args.generations, args.population, args.repeats = 300, 50, 3
    if args.generations < 2 or args.population < 2 or args.repeats < 1:
        parser.error("--generations and --population must be >= 2, --repeats >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; return 0 once it ran (the target is reported)."""
    args = parse_args(argv)
    if args.quick:  # a fresh small store, not kept
        with tempfile.TemporaryDirectory() as folder:
            return measure(args, Path(folder) / "lineage.db")
    return measure(args, store_path(args.generations, args.population))


def measure(args: argparse.Namespace, path: Path) -> int:
    """Build or reuse the store at ``path``, time the queries, print the table."""
    spent = build(path, args.generations, args.population)
    info = versions("numpy", "tdevlab", "websockets")
    size_mb = path.stat().st_size / 2**20
    print(
        f"get_lineage depth {DEPTH}: {args.generations} generations x population "
        f"{args.population} in SQLite ({size_mb:.0f} MB"
        + (f", built in {spent:.0f} s" if spent else ", reused")
        + f"), {args.repeats} timed calls each"
    )
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    print()

    load_before = os.getloadavg()[0]
    with SQLiteStore(path) as store:
        run_id = store.runs()[0].run_id
        with Engine.open(store, run_id) as engine:
            assert engine.population is not None
            best = int(engine.population.agent_id[0])
            agent = f"agent-{best}"
            store_ms, line = timed(
                lambda: store.first_parent_line(run_id, best, DEPTH), args.repeats
            )
            engine_ms, lineage = timed(lambda: engine.lineage(agent, depth=DEPTH), args.repeats)
            whole_ms, whole = timed(lambda: engine.lineage(agent), args.repeats)
            ancestor = lineage.nodes["agent_id"][min(100, len(line) - 1)]
            kids_ms, kids = timed(
                lambda: engine.lineage(ancestor, depth=DEPTH, descendants=True), args.repeats
            )
            server_ms, served = asyncio.run(over_the_server(engine, agent, args.repeats))
    rows = [
        ["query", "median ms", "min ms", "max ms", "CPU ms (median)", "nodes"],
        row(f"store: first_parent_line depth {DEPTH}", store_ms, len(line)),
        row(f"engine: lineage depth {DEPTH}", engine_ms, len(lineage.nodes["agent_id"])),
        row(f"server: get_lineage depth {DEPTH}", server_ms, served),
        row("engine: lineage, whole line", whole_ms, len(whole.nodes["agent_id"])),
        row(f"engine: lineage depth {DEPTH} + descendants", kids_ms, len(kids.nodes["agent_id"])),
    ]
    checks = [
        (name, statistics.median(samples[0]))
        for name, samples in (("engine", engine_ms), ("server", server_ms))
    ]
    print(format_plain(rows))
    print(f"load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print()
    for name, value in checks:
        status = "PASS" if value < TARGET_MS else "FAIL"
        print(f"{status:4}  {name} get_lineage depth {DEPTH} median = {value:.2f} ms "
              f"(target < {TARGET_MS:g})")  # fmt: skip
    if args.markdown:
        print()
        print(format_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
