"""Scenarios whose GA runs are pinned bit for bit by ``data/ga_reference.npz``.

The reference file was written by the engine *before* it was split at the Strategy seam
(``python -m tests.engine.reference_runs`` on that commit); the test in
``test_reference_runs.py`` replays the same scenarios on today's engine and compares every
generation's genes, fitness, ids and parents exactly. Do not regenerate the file to make a
failing comparison pass: a difference means the default strategy changed its runs.

``data/ga_reference.<fingerprint>.npz`` is the same reference recorded by the same commit on
a machine whose NumPy math differs in the last bit (``tests.mathlib``: the values differ by
an ulp, the ids and parents not at all); the test compares with the one this machine's
math matches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tdevlab import AgentDesign, Engine, Rastrigin

REFERENCE = Path(__file__).parent / "data" / "ga_reference.npz"


def _generations(engine: Engine) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    pop = engine.population
    assert pop is not None
    yield (
        engine.generation,
        {
            "genes": pop.genes,
            "fitness": pop.fitness,
            "agent_id": pop.agent_id,
            "parent_a": pop.parent_a,
            "parent_b": pop.parent_b,
            "status": pop.status.astype(np.int64),
        },
    )


def default_ga() -> Iterator[tuple[str, Engine]]:
    """AgentDesign, uniform crossover, elites, 15 generations."""
    engine = Engine(AgentDesign(), population_size=40, mutation_rate=0.15, seed=7)
    for _ in range(15):
        engine.step()
        yield f"g{engine.generation}", engine


def blend_no_elites() -> Iterator[tuple[str, Engine]]:
    """Rastrigin in 5 dimensions, blend crossover, no elites, tournament of 4."""
    engine = Engine(
        Rastrigin(dims=5),
        population_size=30,
        crossover="blend",
        blend_alpha=0.3,
        elite_count=0,
        tournament_size=4,
        seed=3,
    )
    for _ in range(12):
        engine.step()
        yield f"g{engine.generation}", engine


def steered() -> Iterator[tuple[str, Engine]]:
    """Parameter changes mid-run, an uploaded agent, a rollback and a different continuation."""
    engine = Engine(AgentDesign(), population_size=24, seed=11)
    for _ in range(6):
        engine.step()
        yield f"g{engine.generation}", engine
    engine.set_parameters(mutation_rate=0.4, population_size=30, elite_count=3)
    genome = engine.agent(f"agent-{int(engine.population.agent_id[0])}").genes  # type: ignore[union-attr]
    engine.add_agent(genome)
    for _ in range(4):
        engine.step()
        yield f"g{engine.generation}", engine
    engine.rollback(7)
    yield "rollback7", engine
    engine.set_parameters(crossover="blend", mutation_sigma=0.2)
    for _ in range(4):
        engine.step()
        yield f"b{engine.generation}", engine


SCENARIOS: dict[str, Callable[[], Iterator[tuple[str, Engine]]]] = {
    "default": default_ga,
    "blend": blend_no_elites,
    "steered": steered,
}


def record() -> dict[str, np.ndarray]:
    """Run every scenario; return ``{"scenario/label/field": array}``."""
    arrays: dict[str, np.ndarray] = {}
    for name, scenario in SCENARIOS.items():
        for label, engine in scenario():
            for _, fields in _generations(engine):
                for field, value in fields.items():
                    arrays[f"{name}/{label}/{field}"] = np.array(value, copy=True)
    return arrays


if __name__ == "__main__":
    np.savez_compressed(REFERENCE, **record())
    print(f"wrote {REFERENCE}")
