"""Benchmark: pycma, Optuna and Nevergrad inside tdevlab against their own ask/tell loops.

What is measured
----------------
For each library, the same optimizer on the same problem with the same budget, twice in one
process, interleaved, medians over repeats: its own plain ask/tell loop, and the same
optimizer as a tdevlab strategy (``Engine`` with its default memory store and events on,
``step()`` per generation). The ratio tdevlab / plain of the wall time per generation is
what tdevlab adds: the engine's loop, events, statistics, snapshots, and the adapter's
encoding and pickled state. Target: at most 1.10.

* Problem: Rastrigin in 10 dimensions on [-5.12, 5.12], population 64, whose evaluation
  busy-waits 1 ms per call (one call per generation batch, in both loops), so a generation
  costs at least the library's ask and tell plus 1 ms of "fitness".
* pycma: ``cma.CMAEvolutionStrategy`` over the box [0, 1]^10 (x0 its centre, sigma0 0.3,
  popsize 64, ``seed``), ``es.ask()`` / ``es.tell()``; tdevlab's ``"cmaes"`` (same box,
  same settings). 120 generations. Over float genes the adapter starts pycma without
  ``bounds`` and maps each batch into the box itself, with pycma's own transform (the same
  numbers, bit for bit; pycma maps and looks up one solution at a time). So a third loop,
  ``pycma-batch-map``, is pycma's plain loop doing the same: tdevlab against it is the
  engine's and the adapter's own bookkeeping alone (reported, not a target).
* Optuna: a TPE sampler (``seed``), ``study.ask()`` 64 times then ``study.tell()`` each;
  tdevlab's ``"optuna-tpe"``. 8 generations (TPE's cost grows with the trials).
* Nevergrad: ``NGOpt`` over ``ng.p.Array`` in [0, 1]^10 (budget 100 generations, 64
  workers, its archive pruned as tdevlab's adapter prunes it: at least 64 points kept,
  pruned at 256; numpy's global generator seeded as the adapter seeds its copy of it),
  ``optimizer.ask()`` / ``optimizer.tell()``; tdevlab's ``"nevergrad:NGOpt"``. 20
  generations.

Run it (``pip install 'tdevlab[cma,optuna,nevergrad]'`` first)::

    python benchmarks/adapters.py --markdown   # 5 repeats
    python benchmarks/adapters.py --quick      # a smoke run (seconds)
"""

# ruff: noqa: E402  (the package's own imports come after the path is set)

from __future__ import annotations

import os
import sys

if not __package__:  # run by its path: import the `benchmarks` package from the repository
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.path.dirname(_here), *(p for p in sys.path if os.path.abspath(p) != _here)]

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks._tables import format_plain, report_checks, versions, write_json
from tdevlab import Engine, Rastrigin
from tdevlab.engine import Evaluation
from tdevlab.engine.adapters._common import seed_from

DIMS, POPULATION, FITNESS_SECONDS = 10, 64, 0.001
LOW, HIGH = -5.12, 5.12
#: The pycma loop that maps its box a batch at a time, as the adapter does: not a target.
BATCH_MAP = "pycma-batch-map"
GENERATIONS = {"pycma": 120, BATCH_MAP: 120, "optuna-tpe": 8, "nevergrad NGOpt": 20}
STRATEGY = {
    "pycma": "cmaes",
    BATCH_MAP: "cmaes",
    "optuna-tpe": "optuna-tpe",
    "nevergrad NGOpt": "nevergrad:NGOpt",
}
ARCHIVE = 64  # the Nevergrad adapter's default archive_size


class SlowRastrigin(Rastrigin):
    """Rastrigin whose evaluation of a batch busy-waits 1 ms first (a costly fitness)."""

    def evaluate(self, genes: np.ndarray) -> Evaluation:
        until = time.perf_counter() + FITNESS_SECONDS
        while time.perf_counter() < until:
            pass
        return super().evaluate(genes)


def _seed(seed: int) -> int:
    """The library seed tdevlab's adapters draw first from a run's generator."""
    return seed_from(np.random.Generator(np.random.PCG64(seed)))


def plain_pycma(problem: SlowRastrigin, generations: int, seed: int) -> float:
    import cma

    es = cma.CMAEvolutionStrategy(
        [0.5] * DIMS,
        0.3,
        {"popsize": POPULATION, "bounds": [0, 1], "seed": _seed(seed), "verbose": -9},
    )
    best = -np.inf
    for _ in range(generations):
        x = np.asarray(es.ask())
        fitness = problem.evaluate(LOW + x * (HIGH - LOW)).fitness
        es.tell(list(x), (-fitness).tolist())
        best = max(best, float(fitness.max()))
    return best


def plain_pycma_batch_map(problem: SlowRastrigin, generations: int, seed: int) -> float:
    """pycma's plain loop with the box mapped a batch at a time, as tdevlab's adapter maps
    it (pycma without ``bounds``, told the solutions it asked for)."""
    import cma

    from tdevlab.engine.adapters._common import Box
    from tdevlab.engine.adapters.cma_es import BoxMap

    box_map = BoxMap(cma, Box(problem.gene_space))
    es = cma.CMAEvolutionStrategy(
        [0.5] * DIMS, 0.3, {"popsize": POPULATION, "seed": _seed(seed), "verbose": -9}
    )
    best = -np.inf
    for _ in range(generations):
        asked = np.asarray(es.ask())
        x = box_map.forward(asked)
        fitness = problem.evaluate(LOW + x * (HIGH - LOW)).fitness
        es.tell(asked, (-fitness).tolist())
        best = max(best, float(fitness.max()))
    return best


def plain_optuna(problem: SlowRastrigin, generations: int, seed: int) -> float:
    import optuna
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=_seed(seed))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = {f"x{i}": FloatDistribution(LOW, HIGH) for i in range(DIMS)}
    for _ in range(generations):
        trials = [study.ask(space) for _ in range(POPULATION)]
        genes = np.array([[t.params[f"x{i}"] for i in range(DIMS)] for t in trials])
        fitness = problem.evaluate(genes).fitness
        for trial, value in zip(trials, fitness.tolist(), strict=True):
            study.tell(trial, value)
    return float(study.best_value)


def plain_nevergrad(problem: SlowRastrigin, generations: int, seed: int) -> float:
    import nevergrad as ng

    param = ng.p.Array(shape=(DIMS,), lower=0.0, upper=1.0)
    param.random_state = np.random.RandomState(_seed(seed))  # noqa: NPY002 (Nevergrad's API)
    # NGOpt's metamodel draws from the global generator; the adapter seeds its copy so.
    np.random.seed(_seed(seed))  # noqa: NPY002
    optimizer = ng.optimizers.registry["NGOpt"](
        param, budget=100 * POPULATION, num_workers=POPULATION
    )
    optimizer.pruning = ng.optimizers.base.utils.Pruning(ARCHIVE, 4 * ARCHIVE)
    best = -np.inf
    for _ in range(generations):
        candidates = [optimizer.ask() for _ in range(POPULATION)]
        x = np.array([c.value for c in candidates])
        fitness = problem.evaluate(LOW + x * (HIGH - LOW)).fitness
        for candidate, value in zip(candidates, fitness.tolist(), strict=True):
            optimizer.tell(candidate, -value)
        best = max(best, float(fitness.max()))
    return best


PLAIN: dict[str, Callable[[SlowRastrigin, int, int], float]] = {
    "pycma": plain_pycma,
    BATCH_MAP: plain_pycma_batch_map,
    "optuna-tpe": plain_optuna,
    "nevergrad NGOpt": plain_nevergrad,
}


def in_tdevlab(library: str, generations: int, seed: int) -> float:
    """The same optimizer as a tdevlab strategy (memory store, events on)."""
    engine = Engine(
        SlowRastrigin(dims=DIMS),
        strategy=STRATEGY[library],
        seed=seed,
        population_size=POPULATION,
    )
    best = -np.inf
    for _ in range(generations):
        best = max(best, engine.step().evolution.best_fitness)
    engine.close()
    return best


def measure(library: str, generations: int, repeats: int) -> dict[str, Any]:
    """ms per generation of both loops, interleaved (the plain loop first in even repeats)."""
    ours: list[float] = []
    theirs: list[float] = []
    PLAIN[library](SlowRastrigin(dims=DIMS), 1, 99)  # untimed: imports, first calls
    in_tdevlab(library, 1, 99)
    for repeat in range(repeats):
        order = ("plain", "tdevlab") if repeat % 2 == 0 else ("tdevlab", "plain")
        for who in order:
            started = time.perf_counter()
            if who == "plain":
                PLAIN[library](SlowRastrigin(dims=DIMS), generations, repeat)
                theirs.append((time.perf_counter() - started) * 1000 / generations)
            else:
                in_tdevlab(library, generations, repeat)
                ours.append((time.perf_counter() - started) * 1000 / generations)
    return {
        "library": library,
        "generations": generations,
        "tdevlab": statistics.median(ours),
        "plain": statistics.median(theirs),
        "runs": (ours, theirs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats (default 5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown")
    parser.add_argument("--json", type=str, default=None, help="write the raw numbers here")
    parser.add_argument(
        "--library", action="append", choices=list(GENERATIONS), help="only these (repeatable)"
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # the libraries' advice about settings, not results
    repeats = 1 if args.quick else args.repeats
    started = time.perf_counter()
    cases = []
    for library, generations in GENERATIONS.items():
        if args.library and library not in args.library:
            continue
        cases.append(measure(library, 2 if args.quick else generations, repeats))

    rows = [["library", "plain ms/gen", "tdevlab ms/gen", "tdevlab / plain", "min-max"]]
    checks = []
    for case in cases:
        # The ratio within each repeat (both loops ran side by side), its median and spread.
        ratios = [a / b for a, b in zip(*case["runs"], strict=True)]
        ratio = statistics.median(ratios)
        rows.append(
            [
                case["library"],
                f"{case['plain']:.2f}",
                f"{case['tdevlab']:.2f}",
                f"{ratio:.3f}",
                f"{min(ratios):.3f}-{max(ratios):.3f}",
            ]
        )
        if case["library"] == BATCH_MAP:
            continue  # the engine's own share: reported in the table, not a target
        checks.append(
            {
                "name": f"{case['library']} tdevlab / plain",
                "value": ratio,
                "target": "<= 1.10",
                "status": "PASS" if ratio <= 1.10 else "MISS",
            }
        )
    print(
        f"Rastrigin {DIMS}-D, population {POPULATION}, 1 ms fitness per batch; "
        f"{repeats} interleaved repeats, medians\n"
    )
    print(format_plain(rows))
    print()
    report_checks(rows, checks, time.perf_counter() - started, args.markdown)
    if args.json:
        from pathlib import Path

        write_json(
            Path(args.json),
            {"cases": cases, "versions": versions("numpy", "cma", "optuna", "nevergrad")},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
