"""Benchmark: tdevlab's NSGA-II and MAP-Elites strategies against pymoo and pyribs.

What is measured
----------------
Quality, at the same budget, medians over seeds (each seed shared by both contestants):

* NSGA-II on ZDT1 and ZDT2 (30 genes, population 100, 250 generations): the hypervolume of
  the final population's objectives (f1, f2) with reference point (1.1, 1.1), tdevlab's
  ``NSGA2`` strategy (SBX eta 15 with probability 0.9 per pair, polynomial mutation eta 20
  with probability 1/30 per gene, as pymoo's defaults) against ``pymoo``'s ``NSGA2``.
  Target: within 1% of pymoo's median.
* MAP-Elites on the projected-Rastrigin QD benchmark (20 genes on [-5.12, 5.12]; measures:
  the sums of each half of the genes; a 50 x 50 grid over [-51.2, 51.2]^2), 100 solutions a
  batch for 200 batches: tdevlab's ``MapElites`` (gaussian emitter, sigma 0.5 on every gene,
  the first batch around x0 = 0) against pyribs' ``GridArchive`` + ``GaussianEmitter``
  (sigma 0.5, bounded, x0 = 0) with its ``Scheduler``; then tdevlab's iso+line emitter
  (iso sigma 0.05 of the span, line sigma 0.2) against the same pyribs runs. Both archives
  are scored by this script the same way: coverage (the share of cells filled) and QD score
  (the sum over elites of the objective normalised to [0, 100]). Target: within 5% of
  pyribs' medians.

Speed, in the same run, interleaved, medians over repeats:

* NSGA-II milliseconds per generation at population 1000 on ZDT1 (30 genes), after 5
  untimed generations: tdevlab (engine with its events, memory store) against pymoo's
  ask/tell loop. Target: at most 1.0x pymoo (stretch goal 0.5x).
* MAP-Elites evaluations per second with the settings above: tdevlab against pyribs.
  Target: at least 1.0x pyribs.

Run it (``pip install pymoo ribs`` first; they are in the ``bench`` extra)::

    python benchmarks/strategies_vs_peers.py --markdown   # 5 seeds / repeats
    python benchmarks/strategies_vs_peers.py --quick      # a smoke run (seconds)
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
from typing import Any

import numpy as np

from benchmarks._tables import format_plain, report_checks, versions, write_json
from tdevlab import Engine
from tdevlab.engine import NSGA2, ZDT1, ZDT2, MapElites, ProjectedRastrigin
from tdevlab.engine.pareto import hypervolume

REFERENCE = np.array([1.1, 1.1])
UNCONSTRAINED = {"memory_limit_kb": 1e9, "speed_limit_us": 1e9}
QD_DIMS, QD_BINS, QD_BATCH, QD_SIGMA = 20, 50, 100, 0.5
QD_RANGE = 5.12 * (QD_DIMS // 2)


def tdevlab_nsga2(problem: Any, population: int, generations: int, seed: int) -> Engine:
    """An engine running NSGA-II with pymoo's default variation settings."""
    engine = Engine(
        problem,
        strategy=NSGA2(objectives=["min:memory_kb", "min:speed_us"]),
        seed=seed,
        population_size=population,
        crossover_rate=0.9,
        mutation_rate=1.0 / problem.dims,
        elite_count=0,
        max_population_memory=1 << 30,
        **UNCONSTRAINED,
    )
    for _ in range(generations):
        engine.step()
    return engine


def tdevlab_front(engine: Engine) -> np.ndarray:
    pop = engine.population
    assert pop is not None
    return np.column_stack([pop.memory_kb, pop.speed_us])


def pymoo_nsga2(name: str, population: int, generations: int, seed: int) -> np.ndarray:
    from pymoo.algorithms.moo.nsga2 import NSGA2 as PymooNSGA2
    from pymoo.optimize import minimize
    from pymoo.problems import get_problem

    result = minimize(
        get_problem(name), PymooNSGA2(pop_size=population), ("n_gen", generations), seed=seed
    )
    return np.asarray(result.pop.get("F"))


def nsga2_quality(seeds: list[int], generations: int) -> list[dict[str, Any]]:
    rows = []
    for problem in (ZDT1(), ZDT2()):
        ours, theirs = [], []
        for seed in seeds:
            engine = tdevlab_nsga2(problem, 100, generations, seed)
            ours.append(hypervolume(tdevlab_front(engine), REFERENCE))
            engine.close()
            theirs.append(hypervolume(pymoo_nsga2(problem.name, 100, generations, seed), REFERENCE))
        rows.append(
            {
                "case": f"NSGA-II {problem.name} hypervolume",
                "tdevlab": statistics.median(ours),
                "peer": statistics.median(theirs),
                "runs": (ours, theirs),
            }
        )
    return rows


def nsga2_speed(repeats: int, population: int, generations: int) -> dict[str, Any]:
    """ms per generation, interleaved repeats, after 5 untimed generations each."""
    from pymoo.algorithms.moo.nsga2 import NSGA2 as PymooNSGA2
    from pymoo.core.evaluator import Evaluator
    from pymoo.problems import get_problem

    ours, theirs = [], []
    for seed in range(repeats):
        engine = tdevlab_nsga2(ZDT1(), population, 5, seed)
        started = time.perf_counter()
        for _ in range(generations):
            engine.step()
        ours.append((time.perf_counter() - started) * 1000 / generations)
        engine.close()

        problem = get_problem("zdt1")
        algorithm = PymooNSGA2(pop_size=population)
        algorithm.setup(problem, termination=("n_gen", 10**9), seed=seed, verbose=False)
        evaluator = Evaluator()
        for step in range(5 + generations):
            if step == 5:
                started = time.perf_counter()
            offspring = algorithm.ask()
            evaluator.eval(problem, offspring)
            algorithm.tell(infills=offspring)
        theirs.append((time.perf_counter() - started) * 1000 / generations)
    return {
        "case": f"NSGA-II ms/generation, population {population}",
        "tdevlab": statistics.median(ours),
        "peer": statistics.median(theirs),
        "runs": (ours, theirs),
    }


def _normalised_qd(objectives: np.ndarray) -> float:
    worst = -(QD_DIMS * (10.0 + (5.12 + 0.4 * 5.12) ** 2 + 10.0))  # below any value
    return float(np.sum((objectives - worst) / -worst * 100.0))


def map_elites_engine(seed: int, emitter: str = "gaussian") -> Engine:
    """tdevlab's MAP-Elites on the QD benchmark; the first batch around x0 = 0, as pyribs'
    emitter starts."""
    problem = ProjectedRastrigin(dims=QD_DIMS)
    return Engine(
        problem,
        strategy=MapElites(
            bins=(QD_BINS, QD_BINS),
            ranges=[(-QD_RANGE, QD_RANGE)] * 2,
            emitter=emitter,
            x0={name: 0.0 for name in problem.gene_space.names},
            initial_sigma=QD_SIGMA / (2 * 5.12),
            iso_sigma=0.05,
        ),
        seed=seed,
        population_size=QD_BATCH,
        mutation_rate=1.0,
        mutation_sigma=QD_SIGMA / (2 * 5.12),
        elite_count=0,
        **UNCONSTRAINED,
    )


def tdevlab_map_elites(
    batches: int, seed: int, emitter: str = "gaussian"
) -> tuple[float, float, float]:
    """(coverage, QD score, evaluations per second)."""
    engine = map_elites_engine(seed, emitter)
    started = time.perf_counter()
    for _ in range(batches):
        engine.step()
    rate = batches * QD_BATCH / (time.perf_counter() - started)
    pop = engine.population
    assert pop is not None
    coverage = len(pop) / QD_BINS**2
    engine.close()
    return coverage, _normalised_qd(pop.fitness), rate


def pyribs_scheduler(seed: int) -> tuple[Any, Any]:
    """pyribs' ``(GridArchive, Scheduler)`` with one ``GaussianEmitter`` on the benchmark."""
    from ribs.archives import GridArchive
    from ribs.emitters import GaussianEmitter
    from ribs.schedulers import Scheduler

    archive = GridArchive(
        solution_dim=QD_DIMS,
        dims=[QD_BINS, QD_BINS],
        ranges=[(-QD_RANGE, QD_RANGE)] * 2,
        seed=seed,
    )
    emitter = GaussianEmitter(
        archive,
        sigma=QD_SIGMA,
        x0=np.zeros(QD_DIMS),
        bounds=[(-5.12, 5.12)] * QD_DIMS,
        batch_size=QD_BATCH,
        seed=seed,
    )
    return archive, Scheduler(archive, [emitter])


def pyribs_map_elites(batches: int, seed: int) -> tuple[float, float, float]:
    problem = ProjectedRastrigin(dims=QD_DIMS)
    started = time.perf_counter()
    archive, scheduler = pyribs_scheduler(seed)
    for _ in range(batches):
        solutions = scheduler.ask()
        fitness, m1, m2 = problem.evaluate(solutions)
        scheduler.tell(fitness, np.column_stack([m1, m2]))
    rate = batches * QD_BATCH / (time.perf_counter() - started)
    data = archive.data()
    objectives = np.asarray(data["objective"])
    return len(objectives) / QD_BINS**2, _normalised_qd(objectives), rate


def map_elites(seeds: list[int], batches: int) -> list[dict[str, Any]]:
    """Gaussian emitters on both sides (the parity check), then tdevlab's iso+line emitter
    against the same pyribs runs; interleaved per seed."""
    ours, iso, theirs = [], [], []
    for seed in seeds:
        ours.append(tdevlab_map_elites(batches, seed))
        theirs.append(pyribs_map_elites(batches, seed))
        iso.append(tdevlab_map_elites(batches, seed, "iso_line"))
    rows = []
    for name, runs in (("MAP-Elites", ours), ("MAP-Elites iso+line", iso)):
        for i, label in enumerate(("coverage", "QD score", "evaluations/s")):
            a, b = [r[i] for r in runs], [r[i] for r in theirs]
            rows.append(
                {
                    "case": f"{name} {label}",
                    "tdevlab": statistics.median(a),
                    "peer": statistics.median(b),
                    "runs": (a, b),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds / repeats (default 5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown")
    parser.add_argument("--json", type=str, default=None, help="write the raw numbers here")
    args = parser.parse_args(argv)
    seeds = list(range(2 if args.quick else args.seeds))
    generations = 10 if args.quick else 250
    population, timed = (100, 3) if args.quick else (1000, 20)
    batches = 10 if args.quick else 200
    started = time.perf_counter()

    results = nsga2_quality(seeds, generations)
    speed = nsga2_speed(len(seeds), population, timed)
    qd = map_elites(seeds, batches)
    cases = [*results, speed, *qd]

    rows = [["case", "tdevlab", "peer", "tdevlab / peer", "tdevlab min-max", "peer min-max"]]
    for case in cases:
        ours, theirs = case["runs"]
        rows.append(
            [
                case["case"],
                f"{case['tdevlab']:.4g}",
                f"{case['peer']:.4g}",
                f"{_ratio(case):.3f}",
                f"{min(ours):.4g}-{max(ours):.4g}",
                f"{min(theirs):.4g}-{max(theirs):.4g}",
            ]
        )
    print(f"peers: pymoo (NSGA-II), pyribs (MAP-Elites); {len(seeds)} seeds, medians\n")
    print(format_plain(rows))
    checks = []
    for case in results:
        ratio = _ratio(case)
        checks.append(_check(case["case"] + " / pymoo", ratio, ">= 0.99", ratio >= 0.99))
    ratio = _ratio(speed)
    checks.append(_check("NSGA-II ms/generation / pymoo", ratio, "<= 1.0", ratio <= 1.0))
    for case in qd:
        ratio = _ratio(case)
        target = ">= 1.0" if "evaluations" in case["case"] else ">= 0.95"
        checks.append(_check(case["case"] + " / pyribs", ratio, target, ratio >= float(target[3:])))
    print()
    report_checks(rows, checks, time.perf_counter() - started, args.markdown)
    if args.json:
        from pathlib import Path

        write_json(
            Path(args.json),
            {"cases": cases, "versions": versions("numpy", "pymoo", "ribs", "tdevlab")},
        )
    return 0


def _ratio(case: dict[str, Any]) -> float:
    """tdevlab / peer (NaN when the peer scored 0, as a too short smoke run can)."""
    return float(case["tdevlab"] / case["peer"]) if case["peer"] else float("nan")


def _check(name: str, value: float, target: str, passed: bool) -> dict[str, Any]:
    return {"name": name, "value": value, "target": target, "status": "PASS" if passed else "MISS"}


if __name__ == "__main__":
    sys.exit(main())
