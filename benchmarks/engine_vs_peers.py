"""Benchmark: the tdevlab engine against a bare NumPy GA, DEAP and PyGAD on one problem.

What is measured
----------------
Every contestant runs the same genetic algorithm on the same problem, in one process:

* problem: Rastrigin, ``f(x) = 10 d + sum(x^2 - 10 cos(2 pi x))``, 32 dimensions, bounds
  ``[-5.12, 5.12]``, minimized;
* population 1000, 100 generations, tournament selection (size 3), elitism 1 (the best
  individual is copied unchanged);
* uniform crossover, one child per parent pair: with probability 0.7 each gene comes from
  either parent with probability 0.5, otherwise the child is a copy of the first parent;
* gaussian mutation of each gene with probability 0.15 and sigma 0.1 (in gene units),
  clipped to the bounds.

Contestants:

1. ``numpy``: a straightforward but efficient NumPy GA (whole-array operations, one
   ``np.random.Generator(PCG64(seed))``, the whole population evaluated every generation).
   This is the floor the others are compared against.
2. ``tdevlab``: :class:`tdevlab.Engine` with its events on and no database
   (``store=None``, the in-memory store).
3. ``tdevlab-sqlite``: the same engine writing every generation to a fresh SQLite file.
4. ``deap``: DEAP used the standard way (list individuals, ``selTournament``,
   ``cxUniform`` through ``algorithms.varAnd``, ``mutGaussian`` with a bounds decorator,
   evaluation of the invalid individuals through ``toolbox.map``).
5. ``pygad``: ``pygad.GA`` with tournament selection, its built-in uniform crossover, a
   custom vectorized gaussian mutation and a batch (vectorized) fitness function.

Each timed run is "build + initial population + G generations": the clock starts before
the engine / toolbox / GA object is built and stops after the last generation (and, for
the engines, after ``close()``); the time is divided by G. Repeats are interleaved (the
repeat loop is outside, the contestant loop inside) so machine noise hits all alike; each
repeat uses its own seed, shared by all contestants. Before timing, every contestant runs
once untimed on a tiny problem to import lazily-loaded modules, and ``gc.collect()`` runs
before each timed run. The table reports the median, min and max ms per generation over the
repeats, the ratio of medians to the NumPy floor, and the median of the final best
Rastrigin value (recomputed by this script from each final population, so all contestants
are scored by the same function).

Run it (``pip install -e .[bench]`` first)::

    python benchmarks/engine_vs_peers.py                # 5 repeats, plain-text table
    python benchmarks/engine_vs_peers.py --markdown     # also a Markdown table for the README
    python benchmarks/engine_vs_peers.py --only numpy,tdevlab --repeats 9 --json out.json
    python benchmarks/engine_vs_peers.py --quick        # a smoke run (~1 s)
"""

# ruff: noqa: E402  (the package's own imports come after the path is set)

from __future__ import annotations

import os
import sys

if not __package__:  # run by its path: import the `benchmarks` package from the repository
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.path.dirname(_here), *(p for p in sys.path if os.path.abspath(p) != _here)]

import argparse
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from benchmarks._tables import format_markdown, format_plain, versions, write_json

FloatArray = npt.NDArray[np.float64]

LOW, HIGH = -5.12, 5.12
TOURNAMENT_SIZE = 3
CROSSOVER_RATE = 0.7
MUTATION_RATE = 0.15
SIGMA = 0.1  # absolute, in gene units
ELITES = 1

# Targets checked at the end: (numerator, denominator, comparison, bound).
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("tdevlab", "numpy", "<=", 1.2),
    ("tdevlab-sqlite", "numpy", "<=", 3.0),
    ("deap", "tdevlab", ">=", 20.0),
)


@dataclass(frozen=True)
class Settings:
    """The benchmark problem's size."""

    population: int = 1000
    generations: int = 100
    dims: int = 32


class RunOutcome(NamedTuple):
    """One timed run: wall time of "build + init + generations" and the final best f(x)."""

    seconds: float
    best: float


def rastrigin(x: FloatArray) -> FloatArray:
    """Return the Rastrigin value of each row of ``x``.

    The same vectorized code as ``tdevlab.Rastrigin`` (cosine in place, row sums with
    einsum), so the floor and tdevlab spend the same time on fitness and their ratio
    measures the engine's own overhead.
    """
    c = np.multiply(x, 2.0 * np.pi)
    np.cos(c, out=c)
    values: FloatArray = (
        10.0 * x.shape[1] + np.einsum("ij,ij->i", x, x) - 10.0 * np.einsum("ij->i", c)
    )
    return values


def final_best(genes: Any) -> float:
    """Return the best (lowest) Rastrigin value of a final population (untimed)."""
    return float(rastrigin(np.asarray(genes, dtype=np.float64)).min())


# -- 1. the NumPy floor ----------------------------------------------------------------------


def run_numpy_floor(settings: Settings, seed: int) -> RunOutcome:
    """A plain whole-array GA; the floor every other contestant is compared against."""
    start = time.perf_counter()
    rng = np.random.Generator(np.random.PCG64(seed))
    n, d = settings.population, settings.dims
    n_children = n - ELITES
    genes = rng.uniform(LOW, HIGH, size=(n, d))
    f = rastrigin(genes)
    rows = np.arange(2 * n_children)
    for _ in range(settings.generations):
        best = int(np.argmin(f))
        contestants = rng.integers(0, n, size=(2 * n_children, TOURNAMENT_SIZE))
        parents = contestants[rows, np.argmin(f[contestants], axis=1)]
        first = genes[parents[:n_children]]
        second = genes[parents[n_children:]]
        crossed = rng.random(n_children) < CROSSOVER_RATE
        take_second = (rng.random((n_children, d)) < 0.5) & crossed[:, None]
        children = np.where(take_second, second, first)
        mutate = rng.random((n_children, d)) < MUTATION_RATE
        children[mutate] += SIGMA * rng.standard_normal(np.count_nonzero(mutate))
        np.clip(children, LOW, HIGH, out=children)
        genes = np.concatenate((genes[best : best + 1], children))
        f = rastrigin(genes)
    elapsed = time.perf_counter() - start
    return RunOutcome(elapsed, float(f.min()))


# -- 2, 3. tdevlab ---------------------------------------------------------------------------


def run_tdevlab(settings: Settings, seed: int, store: str | None) -> RunOutcome:
    """The tdevlab engine: one ``step()`` (generation 0) then ``run(generations=G)``."""
    from tdevlab import Engine, Rastrigin

    start = time.perf_counter()
    engine = Engine(
        Rastrigin(dims=settings.dims),
        population_size=settings.population,
        mutation_rate=MUTATION_RATE,
        crossover_rate=CROSSOVER_RATE,
        tournament_size=TOURNAMENT_SIZE,
        elite_count=ELITES,
        crossover="uniform",
        mutation_sigma=SIGMA / (HIGH - LOW),  # tdevlab's sigma is relative to the gene span
        seed=seed,
        store=store,
        keep_snapshots=None,
    )
    try:
        engine.step()  # generation 0: the initial population
        for _ in engine.run(generations=settings.generations):
            pass
    finally:
        engine.close()
    elapsed = time.perf_counter() - start
    population = engine.population
    if engine.generation != settings.generations or population is None:
        raise RuntimeError(
            f"tdevlab stopped at generation {engine.generation}, expected {settings.generations}"
        )
    return RunOutcome(elapsed, final_best(population.genes))


def run_tdevlab_memory(settings: Settings, seed: int) -> RunOutcome:
    """tdevlab with events on and no database."""
    return run_tdevlab(settings, seed, store=None)


def run_tdevlab_sqlite(settings: Settings, seed: int) -> RunOutcome:
    """tdevlab writing every generation to a fresh SQLite file."""
    with tempfile.TemporaryDirectory(prefix="tdevlab-bench-") as tmp:
        return run_tdevlab(settings, seed, store=str(Path(tmp) / "bench.db"))


# -- 4. DEAP ---------------------------------------------------------------------------------


def _deap_classes() -> None:
    """Create DEAP's FitnessMin and Individual classes once per process."""
    from deap import base, creator

    if not hasattr(creator, "FitnessMin"):
        creator.create("FitnessMin", base.Fitness, weights=(-1.0,))
    if not hasattr(creator, "Individual"):
        creator.create("Individual", list, fitness=creator.FitnessMin)


def check_bounds(
    low: float, high: float
) -> Callable[[Callable[..., Sequence[list[float]]]], Callable[..., Sequence[list[float]]]]:
    """DEAP's documented decorator that clips operator outputs to the bounds."""

    def decorator(
        operator: Callable[..., Sequence[list[float]]],
    ) -> Callable[..., Sequence[list[float]]]:
        def wrapper(*args: Any, **kwargs: Any) -> Sequence[list[float]]:
            offspring = operator(*args, **kwargs)
            for child in offspring:
                for i, value in enumerate(child):
                    if value > high:
                        child[i] = high
                    elif value < low:
                        child[i] = low
            return offspring

        return wrapper

    return decorator


def run_deap(settings: Settings, seed: int) -> RunOutcome:
    """DEAP the usual way: an eaSimple-style loop around ``algorithms.varAnd``, plus elitism."""
    from deap import algorithms, base, benchmarks, creator, tools

    _deap_classes()
    start = time.perf_counter()
    random.seed(seed)
    toolbox = base.Toolbox()
    toolbox.register("attr_float", random.uniform, LOW, HIGH)
    toolbox.register(
        "individual", tools.initRepeat, creator.Individual, toolbox.attr_float, n=settings.dims
    )
    toolbox.register("population", tools.initRepeat, list, toolbox.individual)
    toolbox.register("evaluate", benchmarks.rastrigin)
    toolbox.register("mate", tools.cxUniform, indpb=0.5)
    toolbox.register("mutate", tools.mutGaussian, mu=0.0, sigma=SIGMA, indpb=MUTATION_RATE)
    toolbox.decorate("mutate", check_bounds(LOW, HIGH))
    toolbox.register("select", tools.selTournament, tournsize=TOURNAMENT_SIZE)

    population = toolbox.population(n=settings.population)
    for ind, fit in zip(population, toolbox.map(toolbox.evaluate, population), strict=True):
        ind.fitness.values = fit
    for _ in range(settings.generations):
        elite = toolbox.clone(tools.selBest(population, ELITES)[0])
        offspring = toolbox.select(population, len(population) - ELITES)
        # varAnd clones, mates consecutive pairs with probability cxpb (cxUniform makes two
        # complementary children per pair: each child is, with probability 0.7, a uniform
        # mix of two tournament winners, else a copy of one), then calls mutate on every
        # child (mutpb=1.0) and mutGaussian mutates each gene with probability 0.15.
        offspring = algorithms.varAnd(offspring, toolbox, cxpb=CROSSOVER_RATE, mutpb=1.0)
        invalid = [ind for ind in offspring if not ind.fitness.valid]
        for ind, fit in zip(invalid, toolbox.map(toolbox.evaluate, invalid), strict=True):
            ind.fitness.values = fit
        population[:] = [elite, *offspring]
    elapsed = time.perf_counter() - start
    return RunOutcome(elapsed, final_best(population))


# -- 5. PyGAD --------------------------------------------------------------------------------


def run_pygad(settings: Settings, seed: int) -> RunOutcome:
    """PyGAD with tournament selection, built-in uniform crossover and batch fitness.

    The fitness function is vectorized and called once per generation with
    ``fitness_batch_size=population`` (the installed PyGAD supports batch fitness).
    PyGAD reuses the cached fitness of the kept elite, so it evaluates one row fewer.

    Semantics note: PyGAD's ``crossover_probability`` is not "probability that a child is a
    crossover". For each child its uniform crossover draws one number per mating parent,
    keeps the parents whose number is below 0.7, and crosses two of them picked at random
    (a copy only when fewer than two qualify), so in effect every child is crossed. This
    is PyGAD's own operator, used as its users would.
    """
    import pygad

    n = settings.population

    def fitness(ga: Any, solutions: FloatArray, indices: Any) -> FloatArray:
        return -rastrigin(solutions)  # PyGAD maximizes

    def gaussian_mutation(offspring: FloatArray, ga: Any) -> FloatArray:
        rng = ga.numpy_random_generator  # the GA's own seeded RandomState
        mutated = np.array(offspring, dtype=np.float64)
        mask = rng.random(mutated.shape) < MUTATION_RATE
        mutated[mask] += SIGMA * rng.standard_normal(np.count_nonzero(mask))
        np.clip(mutated, LOW, HIGH, out=mutated)
        return mutated

    start = time.perf_counter()
    ga = pygad.GA(
        num_generations=settings.generations,
        num_parents_mating=n,
        fitness_func=fitness,
        fitness_batch_size=n,
        sol_per_pop=n,
        num_genes=settings.dims,
        init_range_low=LOW,
        init_range_high=HIGH,
        parent_selection_type="tournament",
        K_tournament=TOURNAMENT_SIZE,
        keep_elitism=ELITES,
        crossover_type="uniform",
        crossover_probability=CROSSOVER_RATE,
        mutation_type=gaussian_mutation,
        random_seed=seed,
        suppress_warnings=True,
    )
    ga.run()
    elapsed = time.perf_counter() - start
    if ga.generations_completed != settings.generations:
        raise RuntimeError(
            f"PyGAD completed {ga.generations_completed} generations, "
            f"expected {settings.generations}"
        )
    return RunOutcome(elapsed, final_best(ga.population))


# -- the harness -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Contestant:
    """A named runner."""

    key: str
    label: str
    run: Callable[[Settings, int], RunOutcome]


CONTESTANTS: tuple[Contestant, ...] = (
    Contestant("numpy", "numpy floor", run_numpy_floor),
    Contestant("tdevlab", "tdevlab (events on, store off)", run_tdevlab_memory),
    Contestant("tdevlab-sqlite", "tdevlab + SQLite store", run_tdevlab_sqlite),
    Contestant("deap", "DEAP", run_deap),
    Contestant("pygad", "PyGAD", run_pygad),
)


@dataclass
class Result:
    """Per-repeat numbers of one contestant."""

    key: str
    label: str
    ms_per_generation: list[float] = field(default_factory=list)
    final_best: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms_per_generation)


def select_contestants(only: str | None) -> list[Contestant]:
    """Return the contestants named in ``--only`` (all when ``None``), in table order."""
    if not only:
        return list(CONTESTANTS)
    wanted = {name.strip().lower() for name in only.split(",") if name.strip()}
    known = {c.key for c in CONTESTANTS}
    unknown = sorted(wanted - known)
    if unknown:
        raise SystemExit(f"unknown contestant(s) {unknown}; choose from {sorted(known)}")
    return [c for c in CONTESTANTS if c.key in wanted]


def warm_up(contestants: Sequence[Contestant]) -> None:
    """Run each contestant once on a tiny problem so lazy imports are not timed."""
    tiny = Settings(population=20, generations=2, dims=4)
    for contestant in contestants:
        contestant.run(tiny, 0)


def benchmark(
    contestants: Sequence[Contestant], settings: Settings, repeats: int, base_seed: int
) -> dict[str, Result]:
    """Run every contestant ``repeats`` times, interleaved, one seed per repeat."""
    results = {c.key: Result(c.key, c.label) for c in contestants}
    for repeat in range(repeats):
        seed = base_seed + repeat
        line = []
        for contestant in contestants:
            gc.collect()
            outcome = contestant.run(settings, seed)
            ms = outcome.seconds * 1000.0 / settings.generations
            result = results[contestant.key]
            result.ms_per_generation.append(ms)
            result.final_best.append(outcome.best)
            result.seeds.append(seed)
            line.append(f"{contestant.key} {ms:.2f}")
        print(
            f"repeat {repeat + 1}/{repeats} (seed {seed}): " + ", ".join(line) + " ms/gen",
            file=sys.stderr,
            flush=True,
        )
    return results


def ratio(results: dict[str, Result], numerator: str, denominator: str) -> float | None:
    """Ratio of median ms/generation, or ``None`` if either contestant did not run."""
    if numerator not in results or denominator not in results:
        return None
    return results[numerator].median_ms / results[denominator].median_ms


def table_rows(results: dict[str, Result]) -> list[list[str]]:
    """Return the table's cells, header first."""
    rows = [
        [
            "contestant",
            "median ms/gen",
            "min",
            "max",
            "ratio to numpy floor",
            "final best f (median)",
        ]
    ]
    for result in results.values():
        r = ratio(results, result.key, "numpy")
        rows.append(
            [
                result.label,
                f"{result.median_ms:.2f}",
                f"{min(result.ms_per_generation):.2f}",
                f"{max(result.ms_per_generation):.2f}",
                "n/a" if r is None else f"{r:.2f}x",
                f"{statistics.median(result.final_best):.2f}",
            ]
        )
    return rows


def target_checks(results: dict[str, Result]) -> list[dict[str, Any]]:
    """Evaluate the speed targets that the selected contestants allow."""
    checks = []
    for numerator, denominator, op, bound in TARGETS:
        value = ratio(results, numerator, denominator)
        if value is None:
            status = "SKIP"
        elif op == "<=":
            status = "PASS" if value <= bound else "FAIL"
        else:
            status = "PASS" if value >= bound else "FAIL"
        checks.append(
            {
                "name": f"{numerator} / {denominator}",
                "value": value,
                "target": f"{op} {bound}",
                "status": status,
            }
        )
    return checks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contestant")
    parser.add_argument("--generations", type=int, default=100, help="generations per run")
    parser.add_argument("--population", type=int, default=1000, help="population size")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first repeat")
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="run a subset of: " + ", ".join(c.key for c in CONTESTANTS),
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    args = parser.parse_args(argv)
    if args.quick:
        args.population, args.generations, args.repeats = 100, 5, 1
    if args.repeats < 1 or args.generations < 1 or args.population < 2 or args.seed < 0:
        parser.error("--repeats and --generations must be >= 1, --population >= 2, --seed >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables; return 0 once it ran (targets are reported)."""
    args = parse_args(argv)
    settings = Settings(population=args.population, generations=args.generations)
    contestants = select_contestants(args.only)
    info = versions("numpy", "tdevlab", "deap", "pygad", implementation=True)

    print(
        f"Rastrigin {settings.dims}-d, population {settings.population}, "
        f"{settings.generations} generations (+ init), {args.repeats} repeats, "
        f"seeds {args.seed}..{args.seed + args.repeats - 1}"
    )
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    print()

    warm_up(contestants)
    results = benchmark(contestants, settings, args.repeats, args.seed)
    rows = table_rows(results)
    checks = target_checks(results)

    print(format_plain(rows))
    print()
    for check in checks:
        value = "n/a" if check["value"] is None else f"{check['value']:.2f}"
        print(f"{check['status']:4}  {check['name']} = {value} (target {check['target']})")

    if args.markdown:
        print()
        print(format_markdown(rows))
        print()
        for check in checks:
            value = "n/a" if check["value"] is None else f"{check['value']:.2f}"
            print(f"- {check['name']} = {value} (target {check['target']}): **{check['status']}**")

    if args.json is not None:
        payload = {
            "settings": {**asdict(settings), "repeats": args.repeats, "base_seed": args.seed},
            "versions": info,
            "results": {key: asdict(result) for key, result in results.items()},
            "medians_ms_per_generation": {k: r.median_ms for k, r in results.items()},
            "checks": checks,
        }
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
