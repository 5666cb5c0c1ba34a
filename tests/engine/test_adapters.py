"""pycma, Optuna and Nevergrad as strategies: live over the server, exact pause, rollback and
reopen, datasets, the same run as the library's own loop, and clear errors.

Exactness is checked as for the GA and the other strategies: whole populations (genes,
fitness) and the strategy's state against an uninterrupted run. The pickled library state
is compared as text where it is restored (a rollback, a reopened store): the libraries
record wall-clock times (pycma's timer, Optuna's trial timestamps), so the text a replay
pickles differs from the original's in those bytes while every number the run makes is
the same.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tdevlab
from tdevlab import AgentDesign, Engine, Sphere, load_run
from tdevlab.engine.adapters._common import seed_from
from tdevlab.engine.strategy import make_strategy, strategy_names
from tdevlab.exceptions import InvalidParameters, MissingExtra
from tests.conftest import timeout
from tests.server.conftest import TIMEOUT, client, make_server

ROOT = Path(__file__).resolve().parents[2]

#: Each adapter with small settings (a few generations of 8 agents take well under a second).
ADAPTERS = {
    "cmaes": {},
    "optuna-tpe": {"options": {"n_startup_trials": 8}},
    "nevergrad:NGOpt": {"budget": 400},
}
NAMES = sorted(ADAPTERS)
#: The adapters as test parameters: nevergrad's (its import alone takes seconds) in the full
#: suite only, the others in `make test-fast` too.
PARAMS = [
    pytest.param(n, marks=pytest.mark.slow) if n.startswith("nevergrad") else n for n in NAMES
]


def _engine(name: str, **kwargs: Any) -> Engine:
    kwargs.setdefault("population_size", 8)
    return Engine(Sphere(dims=3), strategy=make_strategy(name, ADAPTERS[name]), seed=7, **kwargs)


#: The state keys holding a pickled library (see the module docstring).
PICKLED = ("es", "study", "optimizer")


def _fingerprint(engine: Engine) -> tuple[Any, ...]:
    pop = engine.population
    assert pop is not None
    state = {k: v for k, v in engine._strategy_state.items() if k not in PICKLED}
    return (
        engine.generation,
        pop.genes.tobytes(),
        pop.fitness.tobytes(),
        pop.agent_id.tobytes(),
        json.dumps(state, sort_keys=True),
    )


def _pickled(engine: Engine) -> str:
    (text,) = (engine._strategy_state[k] for k in PICKLED if k in engine._strategy_state)
    return str(text)


def _history(engine: Engine, generations: int) -> list[tuple[Any, ...]]:
    out = []
    for _ in range(generations):
        engine.step()
        out.append(_fingerprint(engine))
    return out


@pytest.mark.slow  # imports pycma, Optuna and Nevergrad
def test_adapters_are_registered_by_name() -> None:
    """The adapters' names are known (the nevergrad family by its form), and each builds the
    class the docs name; make_strategy takes any registry name after "nevergrad:"."""
    names = strategy_names()
    assert {"cmaes", "optuna-tpe", "optuna-cmaes", "optuna-nsga2"} <= set(names)
    assert "nevergrad:<name>" in names
    assert isinstance(make_strategy("cmaes"), tdevlab.engine.CMAES)
    assert isinstance(make_strategy("optuna-nsga2"), tdevlab.engine.OptunaSampler)
    strategy = make_strategy("nevergrad:DE", {"archive_size": 16})
    assert isinstance(strategy, tdevlab.engine.Nevergrad)
    assert (strategy.name, strategy.config["archive_size"]) == ("nevergrad:DE", 16)


@pytest.mark.parametrize("name", PARAMS)
def test_rollback_then_continue_repeats_the_generations_bit_for_bit(name: str) -> None:
    """Roll back mid-run and continue: the same genes, fitness and library state."""
    engine = _engine(name)
    original = _history(engine, 5)
    pickled = _pickled(engine)
    original += _history(engine, 4)
    engine.rollback(4)
    assert _fingerprint(engine) == original[4]
    assert _pickled(engine) == pickled  # the library's state restored bit for bit
    replay = _history(engine, 4)
    # Ids are never reused after a rollback; the rest repeats exactly.
    assert [r[:3] + r[4:] for r in replay] == [o[:3] + o[4:] for o in original[5:]]


def test_cmaes_rollback_to_any_generation_replays_its_tells_exactly() -> None:
    """Between its pickles the cmaes state is the last pickle and the tells since: rolled
    back to every generation of a window and past it (mixed genes, so the global random
    state guard is on; an upload and a smaller population among them), the run goes on as
    it did."""
    from tdevlab.engine.adapters.cma_es import PICKLE_EVERY

    upload_at, resize_at = 3, 6  # generations made after an upload, a new population size
    generations = PICKLE_EVERY + 3

    def scripted() -> tuple[Engine, list[tuple[Any, ...]]]:
        engine = Engine(strategy="cmaes", seed=5, population_size=10)
        history = []
        for generation in range(generations):
            if generation == upload_at:
                pop = engine.population
                assert pop is not None
                feasible = int(np.flatnonzero(pop.violation == 0)[0])
                engine.add_agent(engine.space.decode(pop.genes[feasible]))
            if generation == resize_at:
                engine.set_parameters(population_size=8)
            engine.step()
            history.append(_fingerprint(engine))
        return engine, history

    _, original = scripted()
    told = [len(json.loads(o[4])["told"]) for o in original]
    assert told == [i % PICKLE_EVERY for i in range(generations)]
    for generation in range(generations - 1):
        engine, _ = scripted()
        engine.rollback(generation)
        assert _fingerprint(engine) == original[generation], generation
        # Up to three generations on, short of the next upload or resize (made by hand).
        ahead = []
        for g in range(generation + 1, min(generation + 4, generations)):
            if g in (upload_at, resize_at):
                break
            ahead.append(g)
        replay = _history(engine, len(ahead))
        assert [r[:3] + r[4:] for r in replay] == [original[g][:3] + original[g][4:] for g in ahead]


def test_cmaes_keeps_its_optimizer_alive_between_generations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that is not rolled back or reopened never rebuilds the optimizer from its
    state (a replay costs up to 8 asks and tells): each ask finds the one the last tell
    left, across the generations that pickle it too."""
    from tdevlab.engine.adapters.cma_es import CMAES, PICKLE_EVERY

    engine = _engine("cmaes")
    engine.step()

    def refuse(*args: object) -> None:
        raise AssertionError("the optimizer was rebuilt from its state")

    monkeypatch.setattr(CMAES, "_replay", refuse)
    for _ in range(2 * PICKLE_EVERY + 1):
        engine.step()


@pytest.mark.parametrize("name", PARAMS)
def test_pause_resume_and_sqlite_reopen_are_exact(name: str, tmp_path: Path) -> None:
    """Paused, resumed and stopped in a background run, then reopened from SQLite with the
    strategy rebuilt from the store: the generations equal an uninterrupted run's."""
    db = tmp_path / "runs.db"
    engine = _engine(name, store=db)
    engine.control("start")
    deadline = time.monotonic() + TIMEOUT
    while engine.generation < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    engine.control("pause")
    with engine._lock:  # held by a generation in progress: taken once it has ended
        paused_at = engine.generation
    # Nothing ran while paused: resuming finds the generation the pause ended with.
    assert engine.control("resume").generation == paused_at
    while engine.generation < paused_at + 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    engine.control("stop")
    assert engine._thread is not None
    engine._thread.join(TIMEOUT)
    reached = engine.generation
    reference = _history(_engine(name), reached + 4)
    assert _fingerprint(engine) == reference[reached]
    run_id = engine.run_id
    engine.close()
    assert run_id is not None
    pickled = _pickled(engine)
    reopened = Engine.open(db, run_id)  # the strategy and its settings from the store
    assert reopened.strategy.name == name
    assert _fingerprint(reopened) == reference[reached]
    assert _pickled(reopened) == pickled
    assert _history(reopened, 3) == reference[reached + 1 :]
    reopened.close()


@pytest.mark.parametrize("name", PARAMS)
def test_dataset_exports_and_loads(name: str, tmp_path: Path) -> None:
    """The run's dataset loads with load_run and names the strategy; its generations are
    the ones the engine announced."""
    engine = _engine(name, store=tmp_path / "runs.db")
    best = [engine.step().evolution.best_fitness for _ in range(4)]
    data = load_run(engine.export(tmp_path / "ds"))
    assert data.generations["best_fitness"].tolist() == best
    assert len(data.population) == 4 * 8
    engine.close()


@pytest.mark.parametrize("name", PARAMS)
def test_streamed_through_the_server_to_the_client(name: str) -> None:
    """A client starts, pauses, resumes, rolls back and stops the run on a real server; every
    generation it receives is the uninterrupted offline run's."""
    offline = _engine(name)
    expected = {}
    for _ in range(14):
        result = offline.step()
        expected[result.generation] = result.evolution.best_fitness

    async def scenario() -> None:
        server = make_server(engine=_engine(name), generation_interval=0.005)
        async with server:
            c = await tdevlab.connect(server.url, token=server.token("ada", "operator"))
            try:
                await c.subscribe("evolution")
                assert (await c.start())["strategy"]["name"] == name
                await c.wait_for("evolution", lambda m: m["data"]["generation"] >= 3)
                assert (await c.pause())["state"] == "paused"
                assert (await c.resume())["state"] == "running"
                await c.wait_for("evolution", lambda m: m["data"]["generation"] >= 6)
                await c.pause()
                assert (await c.rollback(4))["generation"] == 4
                await c.resume()
                await c.wait_for(
                    "evolution",
                    lambda m: m["data"]["branch"] == 1 and m["data"]["generation"] >= 8,
                )
                await c.stop()
                frame = c.frames.evolution
            finally:
                await c.close()
        assert len(frame) >= 9
        for generation, fitness in zip(frame.index, frame["best_fitness"], strict=True):
            assert fitness == expected[int(generation)], generation
        assert int(frame[frame["branch"] == 1].index.min()) == 5

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_run_with_an_executor_is_the_same_run() -> None:
    """Evaluating in a thread pool, in chunks, changes nothing in an adapter's run."""
    from concurrent.futures import ThreadPoolExecutor

    for name in NAMES:
        reference = _history(_engine(name), 4)
        with ThreadPoolExecutor(max_workers=2) as pool:
            engine = _engine(name, executor=pool, chunk_size=3)
            assert _history(engine, 4) == reference, name


def test_pycma_run_is_pycmas_own_loop_with_the_same_seed() -> None:
    """CMAES with seed s: the best fitness of each generation is that of pycma's own ask/tell
    loop over the box [0, 1]^d, seeded with the adapter's first draw of the run's rng."""
    import cma

    # 40 generations: the adapter's normals are drawn in blocks of 16 generations' worth.
    problem, n, seed, generations = Sphere(dims=4), 10, 11, 40
    engine = Engine(problem, strategy="cmaes", seed=seed, population_size=n)
    ours = [engine.step().evolution.best_fitness for _ in range(generations)]
    library_seed = seed_from(np.random.Generator(np.random.PCG64(seed)))
    es = cma.CMAEvolutionStrategy(
        [0.5] * 4, 0.3, {"popsize": n, "bounds": [0, 1], "seed": library_seed, "verbose": -9}
    )
    theirs = []
    for _ in range(generations):
        x = np.asarray(es.ask())
        fitness = problem.evaluate(-5.12 + x * 10.24).fitness
        es.tell(list(x), (-fitness).tolist())
        theirs.append(float(fitness.max()))
    assert ours == theirs


def test_cmaes_normals_are_randomstate_randn_and_pickle_where_they_are() -> None:
    """The adapter's ``randn`` draws RandomState(seed).randn's numbers, for any mix of
    shapes and across its blocks; unpickled anywhere, it goes on with the same numbers and
    its generator's state is the original's."""
    pytest.importorskip("cma")
    from tdevlab.engine.adapters._common import dump, load
    from tdevlab.engine.adapters.cma_es import Normals

    reference = np.random.RandomState(5)  # noqa: NPY002 (the numbers to match)
    normals = load(dump(Normals(5)))  # pickled before its first draw too
    shapes: list[tuple[int, ...]] = [(64, 10)] * 40 + [(1, 10), (64, 10), (), (3,)] * 30
    shapes += [(7000,), (64, 10), (64, 10)]
    for i, shape in enumerate(shapes):
        ours, theirs = normals(*shape), reference.randn(*shape)
        assert type(ours) is type(theirs), (i, shape)
        assert np.array_equal(ours, theirs), (i, shape)
        if i % 7 == 0:
            copy = load(dump(normals))
            a, b = copy._random.get_state(), normals._random.get_state()
            assert np.array_equal(a[1], b[1]), i
            assert a[2:] == b[2:], i
            normals = copy


def test_optuna_tpe_run_is_optunas_own_loop_with_the_same_seed() -> None:
    """optuna-tpe with seed s: the best fitness of each generation is that of Optuna's own
    study.ask / study.tell loop in batches, its TPESampler seeded with the adapter's draw."""
    import optuna
    from optuna.distributions import FloatDistribution

    problem, n, seed = Sphere(dims=3), 6, 5
    engine = Engine(problem, strategy="optuna-tpe", seed=seed, population_size=n)
    ours = [engine.step().evolution.best_fitness for _ in range(5)]
    library_seed = seed_from(np.random.Generator(np.random.PCG64(seed)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=library_seed)
    )
    space = {f"x{i}": FloatDistribution(-5.12, 5.12) for i in range(3)}
    theirs = []
    for _ in range(5):
        trials = [study.ask(space) for _ in range(n)]
        genes = np.array([[t.params[f"x{i}"] for i in range(3)] for t in trials])
        fitness = problem.evaluate(genes).fitness
        for trial, value in zip(trials, fitness.tolist(), strict=True):
            study.tell(trial, value)
        theirs.append(float(fitness.max()))
    assert ours == theirs
    # The state counts every trial told (read without copying them).
    assert engine._strategy_state["trials"] == len(study.trials) == 5 * n


def test_mixed_genes_limits_and_uploads() -> None:
    """On the default problem (log, integer and categorical genes, memory and speed limits)
    each adapter proposes valid genomes, takes uploaded agents, and follows a changed
    population size."""
    for name in [*NAMES, "optuna-nsga2", "optuna-cmaes"]:
        engine = Engine(strategy=name, seed=3, population_size=10)
        engine.step()
        pop = engine.population
        assert pop is not None
        feasible = int(np.flatnonzero(pop.violation == 0)[0])
        uploaded = engine.add_agent(engine.space.decode(pop.genes[feasible]))
        engine.step()
        ids = {f"agent-{i}" for i in engine.population.agent_id}  # type: ignore[union-attr]
        assert uploaded.agent_id in ids, name  # told to the library as a point not asked for
        engine.set_parameters(population_size=6)
        engine.step()
        assert len(engine.population) == 6, name  # type: ignore[arg-type]


def test_the_users_global_numpy_random_state_is_left_alone() -> None:
    """Nevergrad's CMA reseeds numpy's global generator inside pycma; around the adapter's
    calls the user's global state is put back, and the run is the same either way."""
    # Built first: importing Nevergrad's dependencies may draw from the global generator.
    first = Engine(Sphere(dims=3), strategy="nevergrad:CMA", seed=2, population_size=8)
    np.random.seed(123)  # noqa: NPY002 (the user's global state under test)
    before = np.random.get_state()  # noqa: NPY002
    runs = [[first.step().evolution.best_fitness for _ in range(4)]]
    after = np.random.get_state()  # noqa: NPY002
    assert after[0] == before[0]
    assert (after[1] == before[1]).all()
    assert after[2:] == before[2:]
    np.random.seed(999)  # noqa: NPY002 (another global state: the same run)
    second = Engine(Sphere(dims=3), strategy="nevergrad:CMA", seed=2, population_size=8)
    runs.append([second.step().evolution.best_fitness for _ in range(4)])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("problem", [Sphere(dims=3), AgentDesign()], ids=["floats", "mixed"])
def test_pycma_runs_ignore_the_users_global_random_state(problem: Any) -> None:
    """Reseeding numpy's global generator between generations changes nothing in a cmaes
    run (float genes: pycma reads no global state; mixed genes: it reads the adapter's
    copy), and the user's global state is as the user left it."""
    runs = []
    for user_seed in (1, 2):
        engine = Engine(problem, strategy="cmaes", seed=4, population_size=8)
        run = []
        for step in range(5):
            np.random.seed(user_seed * 100 + step)  # noqa: NPY002 (the user's global state)
            before = np.random.get_state()[1].copy()  # noqa: NPY002
            run.append(engine.step().evolution.best_fitness)
            assert (np.random.get_state()[1] == before).all()  # noqa: NPY002
        runs.append(run)
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("name", "config", "named"),
    [
        ("nevergrad:Nope", {}, "'Nope'"),
        ("nevergrad:NGOpt", {"budget": 0}, "budget=0"),
        ("optuna-tpe", {"options": {"seed": 1}}, "['seed']"),
        ("optuna-tpe", {"options": {"n_startup": 3}}, "n_startup"),
        ("cmaes", {"options": {"popsize": 3}}, "['popsize']"),
        ("cmaes", {"options": {"colour": 1}}, "['colour']"),
        ("cmaes", {"sigma0": -1}, "sigma0=-1"),
        ("optuna-sideways", {}, "'optuna-sideways'"),
    ],
)
def test_bad_names_and_settings_are_named(name: str, config: dict[str, Any], named: str) -> None:
    """Unknown optimizers, samplers and options, and reserved or bad settings: refused,
    naming the culprit."""
    with pytest.raises(InvalidParameters) as info:
        make_strategy(name, config)
    assert named in str(info.value)


def test_bad_strategy_over_the_api_is_invalid_command() -> None:
    """control start with an unknown Nevergrad optimizer: INVALID_COMMAND naming it, the
    run untouched; a good adapter is acked and streams."""

    async def main() -> None:
        server = make_server(engine=Engine(Sphere(dims=3), seed=1, population_size=8))
        async with server, client(server) as c:
            await c.request({"type": "subscribe", "channels": ["evolution"]})
            bad = await c.request(
                {
                    "type": "control",
                    "action": "start",
                    "parameters": {"strategy": "nevergrad:NoSuchOptimizer"},
                }
            )
            assert bad["error"]["code"] == "INVALID_COMMAND"
            assert "'NoSuchOptimizer'" in bad["error"]["message"]
            assert server.engine.state.value == "idle"
            started = await c.request(
                {
                    "type": "control",
                    "action": "start",
                    "parameters": {"strategy": {"name": "cmaes", "sigma0": 0.2}},
                }
            )
            assert started["data"]["strategy"] == {
                "name": "cmaes",
                "config": {"sigma0": 0.2, "options": {}},
            }
            await c.event("evolution_update", generation=2)
            await c.request({"type": "control", "action": "stop"})

    asyncio.run(main())


@pytest.mark.parametrize(
    ("name", "module", "extra"),
    [
        ("cmaes", "cma", "cma"),
        ("optuna-tpe", "optuna", "optuna"),
        ("nevergrad:NGOpt", "nevergrad", "nevergrad"),
    ],
)
def test_a_missing_extra_names_the_pip_install(
    name: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the library (not importable), building the strategy raises MissingExtra, an
    InvalidParameters (INVALID_COMMAND on the wire) naming `pip install 'tdevlab[extra]'`."""
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like
    with pytest.raises(tdevlab.MissingExtra) as info:  # exported with the other errors
        Engine(Sphere(dims=2), strategy=name)
    assert tdevlab.MissingExtra is MissingExtra
    assert f"pip install 'tdevlab[{extra}]'" in str(info.value)
    assert isinstance(info.value, InvalidParameters)
    assert isinstance(info.value, ImportError)
    assert info.value.to_wire()["code"] == "INVALID_COMMAND"


PROBE = """
import json, sys
import tdevlab, tdevlab.engine
from tdevlab.engine.strategy import strategy_names
names = strategy_names()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                        ("cma", "cmaes", "optuna", "nevergrad"))))
"""


def test_importing_tdevlab_imports_none_of_the_libraries() -> None:
    """In a fresh interpreter, `import tdevlab` and `tdevlab.engine` (the adapters registered)
    load neither pycma, Optuna nor Nevergrad."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=timeout(120),
        check=True,
        cwd=ROOT,
    )
    assert json.loads(out.stdout) == []


@pytest.mark.slow  # a CLI process per adapter
def test_cli_runs_each_adapter(tmp_path: Path) -> None:
    """`tdevlab run --strategy cmaes|optuna-tpe|nevergrad:NGOpt` runs and stores the
    strategy; an unknown name is a usage error naming it."""
    for name in ("cmaes", "optuna-tpe", "nevergrad:NGOpt"):
        db = tmp_path / f"{name.replace(':', '-')}.db"
        out = subprocess.run(
            [sys.executable, "-m", "tdevlab.cli", "run", "--strategy", name, "--generations",
             "2", "--population-size", "6", "--seed", "1", "--db", str(db), "--quiet"],
            capture_output=True, text=True, timeout=timeout(120), cwd=ROOT,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        assert "generation 1: best" in out.stdout
        reopened = Engine.open(db, 1)
        assert reopened.strategy.name == name
        reopened.close()
    out = subprocess.run(
        [sys.executable, "-m", "tdevlab.cli", "run", "--strategy", "nevergrad:Nope"],
        capture_output=True, text=True, timeout=timeout(120), cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2
    assert "'Nope'" in out.stderr


def test_cmaes_tell_records_keep_values_exactly_and_read_pickled_ones() -> None:
    """A tell without uploads is recorded as its values' float64 bytes (exact, NaN-free
    scores included at the extremes); a pickled record (a tell with uploads, or a run
    recorded before the compact form) still reads back."""
    pytest.importorskip("cma")
    from tdevlab.engine.adapters._common import dump
    from tdevlab.engine.adapters.cma_es import _told, _values

    values = np.array([-1.5, 0.0, -0.0, 1e308, -5e-324, 0.1 + 0.2])
    told, back, n, uploads = _told(_values(values))
    assert told is None
    assert n == values.size
    assert uploads is False
    assert np.array_equal(np.array(back).view(np.int64), values.view(np.int64))
    solutions = np.arange(6.0).reshape(3, 2)
    told, back, n, uploads = _told(dump((solutions, [1.0, 2.0, 3.0], 3, True)))
    assert np.array_equal(told, solutions)
    assert back == [1.0, 2.0, 3.0]
    assert (n, uploads) == (3, True)
