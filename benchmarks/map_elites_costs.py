"""Where a MAP-Elites generation's time goes, tdevlab against pyribs, and what rollback keeps.

The speed case of ``strategies_vs_peers.py`` (projected Rastrigin, 20 genes, a 50 x 50
grid, gaussian emitter, batches of 100) taken apart, in one process:

* pyribs: its scheduler's ``ask``, the evaluation, its ``tell`` (microseconds a batch);
* tdevlab: the same run through ``Engine.step()``, each part of a generation timed by
  wrapping the function that does it: the strategy's ``ask`` and ``tell``, the evaluation
  (with its checks), the population's assembly, the archive's measures and agent updates,
  the ``evolution_update`` and its statistics, the store's recording, and the rest (ids,
  parents, scores, mutation logs, alerts, the snapshot's state);
* the bytes the engine's memory store keeps for rollback after 512 generations, against the
  bytes of those generations' whole populations.

Medians over ``--repeats`` runs of ``--batches`` batches (the first 20 of each untimed).
The wrappers add about a microsecond a call, so the parts sum to a little more than an
unwrapped generation. Run it (``pip install ribs`` first; it is in the ``bench`` extra)::

    python benchmarks/map_elites_costs.py --markdown
    python benchmarks/map_elites_costs.py --quick      # a smoke run
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
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from benchmarks._tables import format_markdown, format_plain, load_average
from benchmarks.strategies_vs_peers import (
    QD_BATCH,
    QD_DIMS,
    map_elites_engine,
    pyribs_scheduler,
)
from tdevlab.engine import MapElites, ProjectedRastrigin
from tdevlab.engine import engine as engine_module
from tdevlab.engine import generation as gen
from tdevlab.store.changes import CHECKPOINT
from tdevlab.store.memory import MemoryStore, _nbytes

WARM = 20
#: (label, module or class, attribute): the parts of a tdevlab generation.
PARTS: list[tuple[str, Any, str]] = [
    ("strategy ask", MapElites, "ask"),
    ("evaluation and its checks", engine_module, "evaluate_batch"),
    ("strategy tell", MapElites, "tell"),
    ("population assembly (archive copy, scores)", gen, "assemble"),
    ("archive measures and agent updates", gen, "strategy_outcome"),
    ("evolution_update (statistics)", gen, "evolution_update"),
    ("store: record the generation", MemoryStore, "record_generation"),
]


@contextmanager
def timed(parts: list[tuple[str, Any, str]], totals: Counter[str]) -> Iterator[None]:
    """Wrap each part's function to add its time to ``totals``; put them back after."""
    saved = [(owner, name, owner.__dict__[name]) for _, owner, name in parts]

    def wrap(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - started

        return wrapper

    for (label, owner, name), (_, _, function) in zip(parts, saved, strict=True):
        setattr(owner, name, wrap(label, function))
    try:
        yield
    finally:
        for owner, name, function in saved:
            setattr(owner, name, function)


def tdevlab_parts(batches: int, seed: int) -> dict[str, float]:
    """Microseconds per generation of each part, and in all."""
    engine = map_elites_engine(seed)
    for _ in range(WARM):
        engine.step()
    totals: Counter[str] = Counter()
    with timed(PARTS, totals):
        started = time.perf_counter()
        for _ in range(batches - WARM):
            engine.step()
        whole = time.perf_counter() - started
    engine.close()
    n = batches - WARM
    out = {label: totals[label] / n * 1e6 for label, _, _ in PARTS}
    out["the rest (ids, parents, scores, logs, alerts, snapshot state)"] = whole / n * 1e6 - sum(
        out.values()
    )
    out["a generation"] = whole / n * 1e6
    return out


def pyribs_parts(batches: int, seed: int) -> dict[str, float]:
    problem = ProjectedRastrigin(dims=QD_DIMS)
    _, scheduler = pyribs_scheduler(seed)
    totals: Counter[str] = Counter()
    for i in range(batches):
        t0 = time.perf_counter()
        solutions = scheduler.ask()
        t1 = time.perf_counter()
        fitness, m1, m2 = problem.evaluate(solutions)
        t2 = time.perf_counter()
        scheduler.tell(fitness, np.column_stack([m1, m2]))
        t3 = time.perf_counter()
        if i >= WARM:
            totals["ask"] += t1 - t0
            totals["evaluation"] += t2 - t1
            totals["tell"] += t3 - t2
    n = batches - WARM
    out = {k: v / n * 1e6 for k, v in totals.items()}
    out["a batch"] = sum(out.values())
    return out


def kept_bytes(generations: int) -> tuple[float, float, int]:
    """(MB the memory store keeps, MB of the same generations whole, archive size)."""
    engine = map_elites_engine(0)
    for _ in range(generations):
        engine.step()
    store, run_id = engine.store, engine.run_id
    assert isinstance(store, MemoryStore)
    assert run_id is not None
    run = store._runs[run_id]
    whole = sum(_nbytes(store.load_snapshot(run_id, *key)) for key in run.snapshots)
    size = len(engine.population or ())
    engine.close()
    return run.snapshot_bytes / 1e6, whole / 1e6, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per side (default 5)")
    parser.add_argument("--batches", type=int, default=200, help="batches a run (default 200)")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown")
    parser.add_argument("--quick", action="store_true", help="a smoke run (a second)")
    args = parser.parse_args(argv)
    generations = 512
    if args.quick:
        args.repeats, args.batches, generations = 1, WARM + 10, 2 * CHECKPOINT + 2
    ours, theirs = [], []
    for seed in range(args.repeats):  # interleaved, as in strategies_vs_peers.py
        ours.append(tdevlab_parts(args.batches, seed))
        theirs.append(pyribs_parts(args.batches, seed))
    rows = [["part", "µs per generation (median)"]]
    for label in ours[0]:
        rows.append([f"tdevlab: {label}", f"{statistics.median(r[label] for r in ours):.0f}"])
    for label in theirs[0]:
        rows.append([f"pyribs: {label}", f"{statistics.median(r[label] for r in theirs):.0f}"])
    kept, whole, size = kept_bytes(generations)
    print(f"MAP-Elites, batches of {QD_BATCH}, {args.repeats} runs of {args.batches} batches\n")
    print(format_plain(rows))
    print(
        f"\nkept for rollback after {generations} generations (archive of {size}): {kept:.1f} MB "
        f"(the same generations whole: {whole:.1f} MB, {whole / kept:.1f}x)"
    )
    print(f"load average at the end {load_average()}")
    if args.markdown:
        print()
        print(format_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
