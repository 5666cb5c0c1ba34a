"""A custom Strategy (the module docstring's example) through the engine, server and client.

The example is executed from ``tdevlab.engine.strategy.__doc__`` itself, so the documented
protocol is the tested one. Exactness is checked by comparing whole populations (genes,
fitness, ids, parents) and the strategy's state with an uninterrupted run.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tdevlab
from tdevlab import Engine, Sphere
from tdevlab.engine import strategy as strategy_module
from tdevlab.engine.control import EngineState
from tdevlab.engine.ga import GeneticAlgorithm
from tdevlab.engine.strategy import Offspring, as_stored, make_strategy, strategy_names
from tdevlab.exceptions import EvolutionFailed, InvalidParameters
from tests.conftest import eventually_sync, run
from tests.serving import TIMEOUT, make_server


def _example_class() -> type:
    doc = strategy_module.__doc__ or ""
    block = doc.split("restarts from a random population when it stalls::\n", 1)[1]
    code = re.split(r"\n(?=\S)", block, maxsplit=1)[0]  # up to the first unindented line
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(code), namespace)  # the documented example, as documented
    cls: type = namespace["HillClimber"]
    return cls


HillClimber = _example_class()


def _engine(**kwargs: Any) -> Engine:
    kwargs.setdefault("population_size", 12)
    return Engine(Sphere(dims=4), strategy=HillClimber(patience=2), seed=5, **kwargs)


def _fingerprint(engine: Engine) -> tuple[Any, ...]:
    pop = engine.population
    assert pop is not None
    return (
        engine.generation,
        pop.genes.tobytes(),
        pop.fitness.tobytes(),
        pop.agent_id.tobytes(),
        pop.parent_a.tobytes(),
        dict(engine._strategy_state),
    )


def _history(engine: Engine, generations: int) -> list[tuple[Any, ...]]:
    out = []
    for _ in range(generations):
        engine.step()
        out.append(_fingerprint(engine))
    return out


def test_documented_example_is_a_strategy_and_restarts_when_stalled() -> None:
    """The example satisfies the protocol, and its state drives real restarts."""
    engine = _engine()
    assert isinstance(engine.strategy, tdevlab.engine.strategy.Strategy)
    history = _history(engine, 30)
    assert any(fp[-1]["stalled"] >= 2 for fp in history)  # it stalled...
    parents = [np.frombuffer(fp[4], dtype=np.int64) for fp in history]
    assert any((p == -1).all() for p in parents[1:])  # ...and restarted at random
    assert any((p >= 0).all() for p in parents)  # mutants name their parent


def test_custom_strategy_rollback_is_exact() -> None:
    """Rollback restores population, generator and strategy state: the replay is identical."""
    engine = _engine()
    original = _history(engine, 16)
    engine.rollback(6)
    assert _fingerprint(engine)[-1] == original[6][-1]
    replay = _history(engine, 9)
    # Ids (and so parent ids) are never reused after a rollback; the rest repeats exactly.
    assert [r[:3] + r[5:] for r in replay] == [o[:3] + o[5:] for o in original[7:16]]
    assert [r[0] for r in replay] == list(range(7, 16))


def test_custom_strategy_pause_resume_and_reopen_are_exact(tmp_path: Any) -> None:
    """Paused, resumed and stopped in a background run, then reopened from SQLite: the
    generations equal an uninterrupted run's."""
    db = tmp_path / "runs.db"
    engine = _engine(store=db)
    engine.control("start")
    eventually_sync(lambda: engine.generation >= 6)
    engine.control("pause")
    engine.ensure_run()  # takes the engine's lock: the generation in progress has ended
    paused_at = engine.generation
    # A loop past its state check when the pause came makes that one generation; then it
    # waits for resume (the lock is free again once that generation ends).
    engine.ensure_run()
    assert engine.generation - paused_at in (0, 1)
    assert engine.state is EngineState.PAUSED
    engine.control("resume")
    eventually_sync(lambda: engine.generation >= 10)
    engine.control("stop")
    assert engine._thread is not None
    engine._thread.join(TIMEOUT)
    reached = engine.generation
    reference = _history(_engine(), reached + 6)  # the uninterrupted run, and 5 more
    assert _fingerprint(engine) == reference[reached]
    run_id = engine.run_id
    engine.close()
    assert run_id is not None
    reopened = Engine.open(db, run_id, strategy=HillClimber(patience=2))
    assert _fingerprint(reopened) == reference[reached]
    assert _history(reopened, 5) == reference[reached + 1 :]
    reopened.close()


def test_custom_strategy_through_server_and_client() -> None:
    """A client starts, pauses, resumes, rolls back and stops a HillClimber run on a real
    server; the generations it receives are those of an uninterrupted offline run."""
    offline = _engine()
    expected = {}
    for _ in range(40):
        result = offline.step()
        expected[result.generation] = result.evolution.best_fitness

    async def scenario() -> None:
        server = make_server(engine=_engine(), generation_interval=0.01)
        async with server:
            client = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
            try:
                await client.subscribe("evolution", "control")
                started = await client.start()
                assert started["state"] == "running"
                await client.wait_for("evolution", lambda m: m["data"]["generation"] >= 5)
                assert (await client.pause())["state"] == "paused"
                assert (await client.resume())["state"] == "running"
                await client.wait_for("evolution", lambda m: m["data"]["generation"] >= 12)
                await client.pause()
                rolled = await client.rollback(8)
                assert rolled["generation"] == 8
                await client.resume()
                await client.wait_for(
                    "evolution",
                    lambda m: m["data"]["branch"] == 1 and m["data"]["generation"] >= 14,
                )
                stopped = await client.stop()
                assert stopped["state"] == "stopped"
                frame = client.frames.evolution
            finally:
                await client.close()
        assert len(frame) >= 15
        for generation, fitness in zip(frame.index, frame["best_fitness"], strict=True):
            assert fitness == expected[int(generation)], generation
        branch_one = frame[frame["branch"] == 1]
        assert int(branch_one.index.min()) == 9  # the run continued after generation 8

    run(scenario())


def test_strategies_are_made_by_name_and_checked() -> None:
    """``ga`` is registered; an unknown name or a non-strategy is refused, naming it."""
    assert "ga" in strategy_names()
    assert isinstance(make_strategy("ga"), GeneticAlgorithm)
    with pytest.raises(InvalidParameters, match="unknown strategy 'nope'"):
        Engine(strategy="nope")
    with pytest.raises(InvalidParameters, match="strategy must have"):
        Engine(strategy=object())  # type: ignore[arg-type]


class _Broken:
    name = "broken"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def init(self, space: Any, params: Any) -> dict[str, Any]:
        return {}

    def ask(self, rng: Any, state: Any, run: Any) -> tuple[Offspring, dict[str, Any]]:
        n = run.params.population_size
        if self.mode == "shape":
            return Offspring(np.zeros((n, 1))), state
        return Offspring(run.space.random(rng, n)), state

    def tell(self, rng: Any, state: Any, run: Any, offspring: Any, scored: Any) -> Any:
        if self.mode == "keep":
            return np.array([0, 0, 1]), state
        if self.mode == "state":
            return np.arange(len(offspring)), {"x": object()}
        return np.arange(len(offspring)), state


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("shape", "genes matrix"),
        ("keep", "more than once"),
        ("state", "tell\\(\\) failed"),
    ],
)
def test_a_broken_strategy_fails_the_generation_cleanly(mode: str, message: str) -> None:
    """A strategy that returns bad output fails with EvolutionFailed naming the problem;
    nothing of the generation is kept, and the random state is unchanged."""
    engine = Engine(Sphere(dims=3), strategy=_Broken(mode), seed=1, population_size=6)
    before = engine.rng.bit_generator.state
    with pytest.raises(EvolutionFailed, match=message):
        engine.step()
    assert engine.generation == -1
    assert engine.rng.bit_generator.state == before


_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.text(alphabet=st.characters(max_codepoint=127), min_size=1000, max_size=3000),
    st.sampled_from([np.float64(1.5), np.int64(3), b"bytes", "\ud800", {1, 2}]),
)
_STATES = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-5, 5)), inner, max_size=4),
    ),
    max_leaves=12,
)


def _round_trip(value: Any) -> tuple[str, Any]:
    try:
        return "ok", msgspec.json.decode(msgspec.json.encode(value))
    except Exception as exc:  # noqa: BLE001 (the kind of refusal is what is compared)
        return "refused", type(exc)


@settings(max_examples=200, deadline=None)
@given(_STATES)
def test_as_stored_is_a_json_round_trip(state: Any) -> None:
    """What the engine keeps of a strategy's state is exactly what a JSON store gives back
    (the round trip it skips for ASCII text and plain numbers gives them back unchanged):
    the same values and types, NaN as None, and the same refusals."""
    expected = _round_trip(state)
    try:
        got: tuple[str, Any] = ("ok", as_stored(state))
    except Exception as exc:  # noqa: BLE001
        got = ("refused", type(exc))
    if expected[0] == "refused":
        assert got[0] == "refused", got
    else:
        assert got == expected
        assert repr(got) == repr(expected)  # the same types too (1 and 1.0, -0.0 and 0.0)


def test_as_stored_edge_cases_are_the_round_trip() -> None:
    """A non-ASCII or unencodable key goes through msgspec (a lone surrogate is refused
    there, as a store would refuse it), and nesting deeper than the recursion allows is
    handed to msgspec whole."""
    with pytest.raises(UnicodeEncodeError):
        as_stored({"\ud800": 1})
    assert as_stored({"é": (1, 2)}) == {"é": [1, 2]}
    deep: Any = 1
    for _ in range(700):
        deep = [deep]
    assert as_stored(deep) == msgspec.json.decode(msgspec.json.encode(deep))
