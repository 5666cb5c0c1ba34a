"""The cmaes adapter's box map: pycma's own box handling applied to a whole batch.

Over float genes with no extra options the adapter starts pycma without ``bounds`` and maps
each batch itself (:class:`~tdevlab.engine.adapters.cma_es.BoxMap`); these tests show that
this is pycma's bounded optimizer number for number: the map against pycma's per-solution
repair in every region of the box, and whole runs (an uploaded agent, rollbacks) against the
same runs with pycma's ``bounds``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tdevlab import Engine, Sphere
from tdevlab.engine.genes import Float, GeneSpace, Integer

cma = pytest.importorskip("cma", reason="pip install 'tdevlab[cma]'")

from tdevlab.engine.adapters._common import Box  # noqa: E402
from tdevlab.engine.adapters.cma_es import CMAES, BoxMap, cma_settings  # noqa: E402


def _box() -> Box:
    # Float genes span [0, 1]; integer genes their number of values (margins of other widths).
    return Box(
        GeneSpace(
            [
                Float("a", -3.0, 40.0),
                Float("b", 1e-4, 1.0, log=True),
                Integer("c", 0, 2),
                Integer("d", -400, 900),
            ]
        )
    )


def test_box_map_is_pycmas_repair_row_by_row_bit_for_bit() -> None:
    """Points inside, within the margins, mirrored beyond a bound and whole periods away map
    exactly as pycma's ``BoundTransform.repair`` maps each; the inverse is pycma's too."""
    box = _box()
    bounds = cma.boundary_handler.BoundTransform([box.lower.tolist(), box.upper.tolist()])
    rng = np.random.default_rng(3)
    width = box.upper - box.lower
    scale = rng.choice([0.01, 0.2, 1.0, 3.0, 50.0], size=(4000, 1))
    points = box.lower + width * (0.5 + scale * rng.standard_normal((4000, box.lower.size)))
    points[:4] = [box.lower, box.upper, box.lower - width, box.upper + 7 * width]
    mapped = BoxMap(cma, box).forward(points)
    expected = np.array([bounds.repair(row.copy()) for row in points])
    assert np.array_equal(mapped, expected)
    assert ((mapped >= box.lower) & (mapped <= box.upper)).all()
    back = BoxMap(cma, box).inverse(mapped[:50])
    assert np.array_equal(back, np.array([bounds.inverse(row) for row in mapped[:50]]))


def _bounded_start(self: CMAES, box: Box, n: int, seed: int, saved: list[Any]) -> Any:
    """``CMAES._start`` as before the box map: pycma given ``bounds``."""
    options = {**cma_settings(box, n, seed, bounds=True), **self.options}
    return cma.CMAEvolutionStrategy(box.center, self.sigma0, options)


def _step(engine: Engine, upload: bool) -> None:
    if upload:  # an agent pycma never asked for (halfway between its first and the centre)
        pop = engine.population
        assert pop is not None
        engine.add_agent(engine.space.decode(pop.genes[0] * 0.5))
    engine.step()


def _scripted(generations: int, upload_at: int) -> tuple[Engine, list[tuple[Any, ...]]]:
    engine = Engine(Sphere(dims=5), strategy="cmaes", seed=4, population_size=12)
    history = []
    for generation in range(generations):
        _step(engine, generation == upload_at)
        pop = engine.population
        assert pop is not None
        state = {k: v for k, v in engine._strategy_state.items() if k != "es"}
        history.append(
            (pop.genes.tobytes(), pop.fitness.tobytes(), pop.agent_id.tobytes(), json.dumps(state))
        )
    return engine, history


def test_float_runs_map_the_box_themselves_and_equal_pycmas_bounded_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A float-gene run (an uploaded agent told as a point pycma never asked for) gives the
    same populations and tells as the same run with pycma's own ``bounds``; rolled back to
    any generation, each goes on as it did."""
    generations, upload_at = 20, 5
    mapped_engine, mapped = _scripted(generations, upload_at)
    live = mapped_engine.strategy._live._obj  # type: ignore[attr-defined]
    assert not live[0].boundary_handler.has_bounds()  # the adapter maps the box here
    for generation in (2, upload_at + 1, 17):
        engine, _ = _scripted(generations, upload_at)
        engine.rollback(generation)
        for g in range(generation + 1, generations):
            _step(engine, g == upload_at)
            pop = engine.population
            assert pop is not None
            assert pop.genes.tobytes() == mapped[g][0], (generation, g)

    monkeypatch.setattr(CMAES, "_start", _bounded_start)
    bounded_engine, bounded = _scripted(generations, upload_at)
    live = bounded_engine.strategy._live._obj  # type: ignore[attr-defined]
    assert live[0].boundary_handler.has_bounds()  # pycma maps the box here
    assert bounded == mapped
