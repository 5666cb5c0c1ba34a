"""Benchmark: one expensive problem evaluated serially, on a process pool and on Dask.

What is measured
----------------
The problem trains a small model per agent, a real computation: logistic regression by
full-batch gradient descent with momentum on a fixed synthetic dataset (2000 x 32 training
rows, 1000 validation rows, and their standardized copies: about 1.5 MB that each
contestant ships to its workers once). An agent's genes are the learning rate (log), the
L2 penalty (log), the momentum and whether to standardize the features; its fitness is
the validation accuracy. The number of
gradient steps is calibrated at start so that one agent costs about 20 ms (measured and
printed); every agent costs the same.

Contestants, each a :class:`tdevlab.Engine` with the same seed and population 64 (62 new
agents to evaluate per generation, plus 2 elites):

1. ``serial``: no executor, the engine calls ``problem.evaluate`` itself;
2. ``process pool``: ``concurrent.futures.ProcessPoolExecutor(2)``;
3. ``dask``: a ``dask.distributed.LocalCluster`` of 2 worker processes with 1 thread each
   (loopback only), through ``client.get_executor()``, with Dask's default settings;
4. ``dask, tuned``: the same with less of Dask's own periodic work competing with the
   fitness code on the 2 busy cores (``DASK_TUNING``: no statistical profiler, memory and
   system monitors every second instead of 0.1 and 0.5 s, no work stealing).

And a reference, the ``floor``: the serial engine, whose problem sends half of each
generation's rows to each of 2 pre-started bare processes over a pipe (no executor, no
chunking, no scheduler): what 2 cores of this machine give the same generations.

Every computation is single-threaded (BLAS threads pinned to 1, for all contestants), so
the 2 workers are 2 cores' worth of agents, and every array of the problem starts on a
cache line in every process (as tdevlab gives them to workers; 8 bytes off, the same
fitness code ran 17% slower). Each contestant runs in its own Python process (started by
this script, driven over a pipe), so none slows another: a Dask scheduler and client in
the same process as the serial engine would compete with it for the GIL. They start side
by side and make generation 0 untimed (worker start-up, shipping the problem); then the
timed generations are interleaved (one generation of each contestant in turn) so machine
noise hits all alike. Only the contestant making a generation runs: the others' process
groups are paused (SIGSTOP), so idle pool workers and Dask's periodic work (heartbeats,
monitors) take no CPU from it (``--no-freeze`` keeps them running). A generation's time is
the wall-clock time of ``engine.step()`` (selection, variation, evaluation, statistics,
events), measured in the contestant's process.

The machine's own parallel efficiency is measured before and after (one pure-Python loop
alone, against 2 of them at once): on a 2-core machine where another program is busy it
drops toward 0.5, and no executor can then reach 2x; the script warns when it is under 0.9.

Reported, per contestant: the median ms per generation; the speedup (serial median /
contestant median); and the executor overhead per generation, measured directly:
the problem's ``evaluate`` logs when it starts and ends in whichever process runs it, and
per generation::

    overhead = 1 - (time in evaluate, summed over the workers) / (workers * T_generation)

the share of the workers' time in a generation not spent in fitness code: sending chunks
and results, scheduling, waiting for the slowest chunk, and the engine's own serial work
(selection, statistics, events; for ``serial`` that is all its overhead is). Two more
columns compare times: "time over a perfect split" is
``(T_executor - T_serial / workers) / T_executor``, which also counts fitness code running
slower in the workers than in the serial engine (two busy cores, a worker's own threads);
"time vs floor" compares with the floor's time. The final best fitness of every engine is
printed too: it must be the same (the same generations, whatever the executor).

The whole comparison is one run; it is repeated (``--repeats``, default 5) with fresh
processes. Each figure is computed within a run (a speedup compares the generations of the
same run), and the table shows its median over the runs and, for the speedup and the
overhead, its min-max.

Targets: speedup >= 1.7 and overhead < 5% for both executors, on 2 cores, in the median of
the runs (the checks print the spread, and say when it crosses the target). A missed target
is reported (FAIL), not an error: the exit status is 0 once the benchmark ran.

Run it (``pip install -e '.[dask]'`` first; by its path from anywhere, or
``python -m benchmarks.distributed`` from the root)::

    python benchmarks/distributed.py                 # 5 runs of 16 timed generations each
    python benchmarks/distributed.py --markdown      # also a Markdown table for the docs
    python benchmarks/distributed.py --generations 24 --repeats 3 --json out.json
    python benchmarks/distributed.py --quick         # a smoke run (~5 s)
"""

# ruff: noqa: E402  (the path and the thread settings below must come before the imports)

from __future__ import annotations

import os
import sys

# Run by its path, this file's folder would come first on the import path, where its own
# name hides Dask's `distributed` package: import the `benchmarks` package from the
# repository instead, in this process and in every process that imports this file again
# (the pool's and Dask's spawned workers get this sys.path and run this file).
if not __package__:
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.path.dirname(_here), *(p for p in sys.path if os.path.abspath(p) != _here)]

# One thread per computation, in this process and in every worker (they inherit it): the
# speedup must come from the workers, not from BLAS threads.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._tables import format_plain, load_average, report_checks, versions, write_json
from tdevlab import Categorical, Engine, Evaluation, Float, GeneSpace
from tdevlab.engine.distributed import BUFFER_ALIGNMENT
from tdevlab.engine.genes import FloatArray

POPULATION = 64
WORKERS = 2
TARGET_AGENT_MS = 20.0
TARGET_SPEEDUP = 1.7
TARGET_OVERHEAD = 0.05


def _aligned(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``array`` starting on a ``BUFFER_ALIGNMENT`` boundary."""
    block = np.empty(array.nbytes + BUFFER_ALIGNMENT, dtype=np.uint8)
    offset = -block.ctypes.data % BUFFER_ALIGNMENT
    out = block[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


class TrainClassifier:
    """Tune logistic regression trained by gradient descent; fitness = validation accuracy.

    Args:
        steps: Gradient steps per agent (sets the cost per agent).
        seed: Seed of the synthetic dataset.
    """

    name = "train_classifier"
    role_names = ("Classifier",)

    def __init__(self, steps: int = 200, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        n, d = 3000, 32
        x = rng.standard_normal((n, d)) * rng.uniform(0.2, 5.0, d) + rng.uniform(-2, 2, d)
        w_true = rng.standard_normal(d)
        logits = (x - x.mean(axis=0)) / x.std(axis=0) @ w_true
        y = (logits + rng.standard_normal(n) > 0).astype(np.float64)
        mean, std = x[:2000].mean(axis=0), x[:2000].std(axis=0)
        z = (x - mean) / std  # standardized copies made once, so every agent costs the same
        # Every array on a cache line, as tdevlab gives them to workers: the speed of the
        # fitness code depends on it (17% slower 8 bytes off), and the serial engine and the
        # floor must not be faster or slower than the executors for the allocator's whims.
        self.x_train, self.y_train = _aligned(x[:2000]), _aligned(y[:2000])
        self.x_valid, self.y_valid = _aligned(x[2000:]), _aligned(y[2000:])
        self.z_train, self.z_valid = _aligned(z[:2000]), _aligned(z[2000:])
        self.steps = int(steps)
        self.gene_space = GeneSpace(
            [
                Float("learning_rate", 1e-3, 2.0, log=True),
                Float("l2", 1e-6, 1e-1, log=True),
                Float("momentum", 0.0, 0.95),
                Categorical("standardize", (False, True)),
            ]
        )
        self.config: dict[str, Any] = {"steps": self.steps}
        # Set by the benchmark: every evaluate call appends "pid start end" (CLOCK_MONOTONIC,
        # the same clock in every process of the machine) so the driver can tell the time
        # spent in fitness code from the rest of a generation.
        self.timing_log: str | None = None

    def roles(self, genes: FloatArray) -> np.ndarray:
        """Every agent has the one role."""
        return np.zeros(genes.shape[0], dtype=np.int64)

    def train(self, learning_rate: float, l2: float, momentum: float, standardize: bool) -> float:
        """Train one model; return its validation accuracy."""
        x, xv = (self.z_train, self.z_valid) if standardize else (self.x_train, self.x_valid)
        n, d = x.shape
        w = np.zeros(d)
        velocity = np.zeros(d)
        for _ in range(self.steps):
            p = 0.5 * (1.0 + np.tanh(0.5 * (x @ w)))  # a sigmoid that cannot overflow
            gradient = x.T @ (p - self.y_train) / n + l2 * w
            velocity = momentum * velocity - learning_rate * gradient
            w = np.clip(w + velocity, -1e3, 1e3)
        return float(np.mean((xv @ w > 0) == (self.y_valid > 0.5)))

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """Train one model per agent (no memory or speed cost)."""
        started = time.clock_gettime(time.CLOCK_MONOTONIC)
        fitness = np.empty(genes.shape[0])
        for row in range(genes.shape[0]):
            agent = self.gene_space.decode(genes[row])
            fitness[row] = self.train(
                float(agent["learning_rate"]),
                float(agent["l2"]),
                float(agent["momentum"]),
                bool(agent["standardize"]),
            )
        zeros = np.zeros(genes.shape[0])
        if self.timing_log is not None:
            ended = time.clock_gettime(time.CLOCK_MONOTONIC)
            # One short O_APPEND write per call: lines from several processes never interleave.
            with open(self.timing_log, "a") as log:
                log.write(f"{os.getpid()} {started!r} {ended!r}\n")
        return Evaluation(fitness, zeros, zeros.copy())


def _spin(n: int) -> float:
    """Seconds to run a pure-Python loop of ``n`` steps."""
    started = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - started


def parallel_efficiency(n: int = 2_000_000) -> float:
    """One loop's time over the slowest of ``WORKERS`` identical loops run at once.

    1.0 means every core is free; about 0.5 with 2 workers means another program keeps a
    core busy, and no executor can then reach a 2x speedup.
    """
    alone = min(_spin(n) for _ in range(3))
    with cf.ProcessPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(_spin, [1000] * WORKERS))  # start the processes
        together = min(max(pool.map(_spin, [n] * WORKERS)) for _ in range(3))
    return alone / together


def calibrate(target_ms: float) -> tuple[int, float]:
    """Choose the steps per agent that cost about ``target_ms``; return (steps, ms per agent)."""
    probe = TrainClassifier(steps=200)
    genes = probe.gene_space.random(np.random.default_rng(123), 16)
    probe.evaluate(genes[:2])  # warm caches
    started = time.perf_counter()
    probe.evaluate(genes)
    per_step = (time.perf_counter() - started) / 16 / probe.steps
    steps = max(int(round(target_ms / 1000.0 / per_step)), 1)
    problem = TrainClassifier(steps=steps)
    timings = []
    for row in range(16):
        started = time.perf_counter()
        problem.evaluate(genes[row : row + 1])
        timings.append((time.perf_counter() - started) * 1000.0)
    return steps, statistics.median(timings)


@dataclass
class Result:
    """One contestant's measurements."""

    name: str
    workers: int
    ms_per_generation: list[float] = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)  # in fitness code, all workers
    first_generation_ms: float = 0.0
    final_best_fitness: float = float("nan")

    @property
    def median_ms(self) -> float:
        """Median ms per timed generation."""
        return statistics.median(self.ms_per_generation)

    @property
    def idle_share(self) -> float:
        """Median share of the workers' time in a generation not spent in fitness code.

        Per generation: ``1 - compute / (workers * wall)``, where ``compute`` is the time the
        problem's ``evaluate`` ran, summed over the processes that ran it.
        """
        return statistics.median(
            1.0 - compute / (self.workers * wall)
            for compute, wall in zip(self.compute_ms, self.ms_per_generation, strict=True)
        )


FLOOR = "floor: 2 bare processes"
TUNED = "dask LocalCluster, tuned"
CONTESTANTS = ("serial", FLOOR, "process pool", "dask LocalCluster", TUNED)

# Dask settings for CPU-bound tasks on a machine whose cores the workers keep busy: less
# of Dask's own periodic work (statistical profiler, memory and system monitors, work
# stealing) competing with the fitness code. Environment variables reach every process.
DASK_TUNING = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "1s",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "1s",
    "DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING": "False",
}


def _floor_worker(problem: TrainClassifier, connection: Any) -> None:
    """Evaluate the genes the driver sends, until it sends None."""
    while (genes := connection.recv()) is not None:
        connection.send(tuple(problem.evaluate(genes)))


class BareProcesses:
    """The floor's problem: the same problem, split in halves over 2 pre-started processes.

    No executor: one pipe per process, the rows out and the three arrays back. The engine
    stays serial, so this measures what 2 cores of this machine give the same generations
    with nothing in the way.
    """

    def __init__(self, problem: TrainClassifier) -> None:
        self.problem = problem
        self.name, self.role_names = problem.name, problem.role_names
        self.gene_space, self.config = problem.gene_space, problem.config
        context = multiprocessing.get_context("fork")
        self.connections: list[Any] = []
        self.processes: list[Any] = []
        for _ in range(WORKERS):
            ours, theirs = context.Pipe()
            process = context.Process(target=_floor_worker, args=(problem, theirs))
            process.start()
            self.connections.append(ours)
            self.processes.append(process)

    def roles(self, genes: FloatArray) -> np.ndarray:
        """As the problem's."""
        return self.problem.roles(genes)

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """Half the rows to each process, then the halves' results joined in order."""
        for connection, half in zip(self.connections, np.array_split(genes, WORKERS), strict=True):
            connection.send(half)
        parts = [connection.recv() for connection in self.connections]
        return Evaluation(*(np.concatenate(column) for column in zip(*parts, strict=True)))

    def close(self) -> None:
        """Stop the processes."""
        for connection, process in zip(self.connections, self.processes, strict=True):
            connection.send(None)
            process.join()


def run_contestant(kind: str, steps: int, seed: int) -> None:
    """Serve one contestant in this process: read commands on stdin, answer JSON lines.

    Answers ``ready`` once the executor is up; then ``step`` makes one generation and
    answers its milliseconds and the milliseconds spent in the problem's ``evaluate``
    summed over every process that ran it (the first step is generation 0: it ships the
    problem), and ``done`` answers the final best fitness and exits.
    """
    problem: Any = TrainClassifier(steps=steps)
    descriptor, problem.timing_log = tempfile.mkstemp(prefix="tdevlab-bench-", suffix=".log")
    os.close(descriptor)
    executor: Any = None
    closers: list[Callable[[], object]] = [lambda: os.unlink(problem.timing_log)]
    evaluated: Any = problem
    if kind == FLOOR:
        evaluated = BareProcesses(problem)
        closers.append(evaluated.close)
    if kind == "process pool":
        executor = cf.ProcessPoolExecutor(max_workers=WORKERS)
        closers.append(executor.shutdown)
    elif kind.startswith("dask"):
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=WORKERS,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            # No dashboard; its HTTP server (always started) on a free loopback port, not
            # 8787, which another cluster on the machine (a parallel test) may hold.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            host="127.0.0.1",
        )
        client = Client(cluster)
        client.wait_for_workers(WORKERS, timeout=60)
        executor = client.get_executor()
        closers += [client.close, cluster.close]

    engine = Engine(evaluated, seed=seed, population_size=POPULATION, executor=executor)

    def answer(payload: dict[str, Any]) -> None:
        print(json.dumps(payload), flush=True)

    answer({"ready": True})
    with open(problem.timing_log) as timings:
        for line in sys.stdin:
            if line.strip() == "step":
                started = time.perf_counter()
                engine.step()
                elapsed = time.perf_counter() - started
                # Every evaluate call of this generation has returned, so its line is written.
                calls = [row.split() for row in timings.read().splitlines()]
                compute = sum(float(end) - float(start) for _, start, end in calls)
                answer({"ms": elapsed * 1000.0, "compute_ms": compute * 1000.0})
            else:
                assert engine.population is not None
                answer({"final_best_fitness": float(engine.population.fitness.max())})
                break
    engine.close()
    for close in closers:
        close()


class Contestant:
    """A contestant running in its own Python process (see :func:`run_contestant`)."""

    def __init__(self, kind: str, steps: int, seed: int, log: Any) -> None:
        self.result = Result(kind, 1 if kind == "serial" else WORKERS)
        command = [sys.executable, os.path.abspath(__file__), "--contestant", kind]
        command += ["--steps", str(steps), "--seed", str(seed)]
        env = {**os.environ, **DASK_TUNING} if kind == TUNED else None
        # Its own process group holds it and every process it starts (pool or Dask workers,
        # Dask's scheduler), so the whole contestant can be paused at once.
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            start_new_session=True,
        )

    def freeze(self) -> None:
        """Pause every process of this contestant (SIGSTOP to its process group)."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Let the contestant's processes run again."""
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Kill every process of this contestant."""
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.process.pid, signal.SIGKILL)

    def ask(self, command: str | None = None) -> dict[str, Any]:
        """Send a command (or none) and return the answer."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"contestant {self.result.name!r} died; see its log")
        answer: dict[str, Any] = json.loads(line)
        return answer


def benchmark(
    steps: int, generations: int, seed: int, kinds: Sequence[str], freeze: bool = True
) -> list[Result]:
    """Run every contestant in its own process, one generation of each in turn.

    With ``freeze``, only the contestant making a generation runs: the others are paused
    (SIGSTOP), so their idle workers and Dask's periodic work (heartbeats, monitors) take no
    CPU from it, as on a machine where the user runs only that one.
    """

    def step(contestant: Contestant, command: str) -> dict[str, Any]:
        if freeze:
            contestant.thaw()
        answer = contestant.ask(command)
        if freeze and command == "step":
            contestant.freeze()
        return answer

    with tempfile.TemporaryFile("w+") as log:
        contestants = [Contestant(kind, steps, seed, log) for kind in kinds]
        try:
            for contestant in contestants:  # they start side by side
                contestant.ask()
            if freeze:
                for contestant in contestants:
                    contestant.freeze()
            for contestant in contestants:
                contestant.result.first_generation_ms = step(contestant, "step")["ms"]
            for _ in range(generations):
                for contestant in contestants:
                    answer = step(contestant, "step")
                    contestant.result.ms_per_generation.append(answer["ms"])
                    contestant.result.compute_ms.append(answer["compute_ms"])
            for contestant in contestants:
                contestant.result.final_best_fitness = step(contestant, "done")[
                    "final_best_fitness"
                ]
                contestant.process.wait(timeout=60)
        except BaseException:
            log.seek(0)
            sys.stderr.write(log.read()[-5000:])
            raise
        finally:
            for contestant in contestants:
                if contestant.process.poll() is None:
                    contestant.kill()
    return [contestant.result for contestant in contestants]


def speedup(results: list[Result], result: Result) -> float:
    """Serial median over this contestant's median (one run)."""
    return results[0].median_ms / result.median_ms


def over_split(results: list[Result], result: Result, ideal: float | None = None) -> float:
    """(T_executor - T_ideal) / T_executor with medians; T_ideal = T_serial / workers."""
    if ideal is None:
        ideal = results[0].median_ms / result.workers
    return (result.median_ms - ideal) / result.median_ms


def _floor(results: list[Result]) -> Result | None:
    return next((r for r in results if r.name == FLOOR), None)


@dataclass
class Summary:
    """One contestant over the runs: the median of each per-run figure, and its spread."""

    name: str
    workers: int
    median_ms: list[float]
    speedup: list[float]
    idle_share: list[float]
    over_split: list[float]
    vs_floor: list[float]
    final_best_fitness: list[float]


def summarize(runs: list[list[Result]]) -> list[Summary]:
    """Per contestant, its figures in every run (each run compares within itself)."""
    out = []
    for i, first in enumerate(runs[0]):
        mine = [(results, results[i]) for results in runs]
        out.append(
            Summary(
                name=first.name,
                workers=first.workers,
                median_ms=[r.median_ms for _, r in mine],
                speedup=[speedup(results, r) for results, r in mine],
                idle_share=[r.idle_share for _, r in mine],
                over_split=[over_split(results, r) for results, r in mine],
                vs_floor=[
                    over_split(results, r, floor.median_ms)
                    for results, r in mine
                    if (floor := _floor(results)) is not None
                ],
                final_best_fitness=[r.final_best_fitness for _, r in mine],
            )
        )
    return out


def _spread(values: list[float], spec: str) -> str:
    return f"{format(min(values), spec)}-{format(max(values), spec)}"


def table_rows(summaries: list[Summary], runs: int) -> list[list[str]]:
    """Header and one row per contestant, as strings: medians over the runs, and spreads."""
    rows = [
        [
            "contestant",
            "median ms/gen",
            "speedup vs serial",
            f"min-max of {runs}",
            "overhead/gen",
            f"min-max of {runs}",
            "time over a perfect split",
            "time vs floor",
            "final best fitness",
        ]
    ]
    for n, s in enumerate(summaries):
        serial = n == 0
        executor = not serial and s.name != FLOOR
        rows.append(
            [
                f"{s.name} ({s.workers} workers)" if executor else s.name,
                f"{statistics.median(s.median_ms):.1f}",
                "1.00x" if serial else f"{statistics.median(s.speedup):.2f}x",
                "-" if serial else _spread(s.speedup, ".2f"),
                f"{statistics.median(s.idle_share):.1%}",
                _spread(s.idle_share, ".1%"),
                "-" if serial else f"{statistics.median(s.over_split):+.1%}",
                f"{statistics.median(s.vs_floor):+.1%}" if executor and s.vs_floor else "-",
                " / ".join(f"{f:.4f}" for f in sorted(set(s.final_best_fitness))),
            ]
        )
    return rows


def target_checks(summaries: list[Summary]) -> list[dict[str, Any]]:
    """Speedup >= 1.7 and overhead < 5% for each executor in the median of the runs; the
    same final result for all."""
    checks: list[dict[str, Any]] = []
    for s in summaries[1:]:
        if s.name == FLOOR:
            continue
        value = statistics.median(s.speedup)
        low, high = min(s.speedup), max(s.speedup)
        checks.append(
            {
                "name": f"{s.name} speedup",
                "value": value,
                "spread": (low, high),
                "crosses": low < TARGET_SPEEDUP <= high,
                "target": f">= {TARGET_SPEEDUP}",
                "status": "PASS" if value >= TARGET_SPEEDUP else "FAIL",
            }
        )
        percent = [share * 100 for share in s.idle_share]
        value, low, high = statistics.median(percent), min(percent), max(percent)
        checks.append(
            {
                "name": f"{s.name} overhead per generation, %",
                "value": value,
                "spread": (low, high),
                "crosses": low < TARGET_OVERHEAD * 100 <= high,
                "target": f"< {TARGET_OVERHEAD * 100:g}",
                "status": "PASS" if value < TARGET_OVERHEAD * 100 else "FAIL",
            }
        )
    fitness = {f for s in summaries for f in s.final_best_fitness}
    checks.append(
        {
            "name": "distinct final best fitness values, every contestant and run",
            "value": float(len(fitness)),
            "target": "== 1",
            "status": "PASS" if len(fitness) == 1 else "FAIL",
        }
    )
    return checks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--generations", type=int, default=16, help="timed generations each")
    parser.add_argument("--repeats", type=int, default=5, help="runs, each of every contestant")
    parser.add_argument("--seed", type=int, default=1, help="the engines' seed")
    parser.add_argument(
        "--agent-ms", type=float, default=TARGET_AGENT_MS, help="target cost of one agent (20)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    parser.add_argument(
        "--only",
        choices=["pool", "dask"],
        help="serial and only this executor (the other's idle workers cost a little CPU)",
    )
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="keep the idle contestants running while one computes (by default they are paused)",
    )
    parser.add_argument("--contestant", choices=CONTESTANTS, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.generations, args.repeats, args.agent_ms = 1, 1, 2.0
    if args.generations < 1 or args.repeats < 1 or args.seed < 0 or args.agent_ms <= 0:
        parser.error("--generations and --repeats must be >= 1, --seed >= 0, --agent-ms > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables; return 0 once it ran (targets are reported)."""
    args = parse_args(argv)
    if args.contestant is not None:
        run_contestant(args.contestant, args.steps, args.seed)
        return 0
    info = versions("numpy", "tdevlab", "dask", "distributed")
    steps, agent_ms = calibrate(args.agent_ms)
    print(
        f"TrainClassifier: {steps} gradient steps per agent = {agent_ms:.1f} ms per agent "
        f"(target {args.agent_ms:.0f}); population {POPULATION}, {args.generations} timed "
        f"generations per contestant (interleaved), seed {args.seed}, {args.repeats} runs"
    )
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    spin = 200_000 if args.quick else 2_000_000
    efficiency = [parallel_efficiency(spin)]
    print(f"parallel efficiency of this machine before the runs: {efficiency[0]:.2f}")
    print()

    kinds = {
        None: CONTESTANTS,
        "pool": CONTESTANTS[:3],
        "dask": (*CONTESTANTS[:2], *CONTESTANTS[3:]),
    }[args.only]
    started = time.perf_counter()
    runs: list[list[Result]] = []
    loads: list[str] = []
    for run in range(args.repeats):
        results = benchmark(steps, args.generations, args.seed, kinds, freeze=not args.no_freeze)
        runs.append(results)
        efficiency.append(parallel_efficiency(spin))
        loads.append(load_average())
        speedups = ", ".join(f"{r.name} {speedup(results, r):.2f}x" for r in results[1:])
        print(
            f"run {run + 1}/{args.repeats}: {speedups}; parallel efficiency after it "
            f"{efficiency[-1]:.2f}; load {loads[-1]}",
            file=sys.stderr,
            flush=True,
        )
    elapsed = time.perf_counter() - started
    summaries = summarize(runs)
    rows = table_rows(summaries, args.repeats)
    checks = target_checks(summaries)
    print(
        "parallel efficiency before the runs and after each: "
        + ", ".join(f"{e:.2f}" for e in efficiency)
    )
    if min(efficiency) < 0.9:
        print(
            "WARNING: another program was using the CPUs (parallel efficiency under 0.9): "
            "the executors' numbers are low; run again on an idle machine"
        )
    print()

    print(format_plain(rows))
    print()
    report_checks(rows, checks, elapsed, args.markdown)
    if args.json is not None:
        payload = {
            "settings": {
                "population": POPULATION,
                "workers": WORKERS,
                "generations": args.generations,
                "repeats": args.repeats,
                "seed": args.seed,
                "steps_per_agent": steps,
                "ms_per_agent": agent_ms,
                "idle_contestants_paused": not args.no_freeze,
            },
            "versions": info,
            "parallel_efficiency_before_and_after_each_run": efficiency,
            "load_average_after_each_run": loads,
            "runs": [
                [
                    asdict(r) | {"median_ms": r.median_ms, "idle_share": r.idle_share}
                    for r in results
                ]
                for results in runs
            ],
            "summaries": [asdict(s) for s in summaries],
            "checks": checks,
        }
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
