"""Distributed evaluation: thread and process pools, and a real Dask LocalCluster."""

from __future__ import annotations

import concurrent.futures as cf
import faulthandler
import multiprocessing
import os
import subprocess
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dask.distributed import Client, LocalCluster
from distributed.cfexecutor import ClientExecutor
from distributed.exceptions import WorkerStartTimeoutError

from tdevlab import (
    AgentDesign,
    Engine,
    EvaluationError,
    Float,
    FunctionProblem,
    InvalidParameters,
    Problem,
    Rastrigin,
    Sphere,
)
from tdevlab.engine.distributed import (
    BUFFER_ALIGNMENT,
    ExecutorEvaluator,
    PickledProblem,
    ProblemToken,
    RemoteTraceback,
    chunk_bounds,
    evaluate_chunk,
    executor_from_options,
    load_problem,
    pickle_problem,
)
from tests.conftest import MS, SCALE, eventually_sync, timeout
from tests.engine.distributed_problems import (
    AlignmentProbe,
    CountingSphere,
    FailOn,
    KillingSphere,
    RaisingSphere,
)

#: Longest a test of this module may wait for anything (a hung cluster ends the run).
# Needs Dask; the local cluster is shared, so these run on one xdist worker.
pytestmark = [pytest.mark.dask, pytest.mark.xdist_group("dask")]

TIMEOUT = 60_000 * MS

SPAWN = multiprocessing.get_context("spawn")  # no fork of a process that runs Dask threads


@pytest.fixture(scope="module", autouse=True)
def watchdog() -> Iterator[None]:
    """Dump tracebacks and exit if the module hangs far past its budget."""
    faulthandler.dump_traceback_later(10 * TIMEOUT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def process_pool() -> Iterator[cf.ProcessPoolExecutor]:
    """Two worker processes, shared by the tests that do not break them."""
    with cf.ProcessPoolExecutor(max_workers=2, mp_context=SPAWN) as pool:
        yield pool


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Client]:
    """A real LocalCluster: 2 worker processes with 1 thread each, on loopback only."""
    with (
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            # No dashboard; its HTTP server (always started) on a free loopback port, not
            # 8787, which another cluster on the machine (a parallel test) may hold.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2, timeout=TIMEOUT)
        yield client


@pytest.fixture
def two_workers(dask_client: Client) -> Iterator[Client]:
    """The cluster with both workers up before and after the test (a test may kill one)."""
    _both_workers(dask_client)
    yield dask_client
    _both_workers(dask_client)


def _both_workers(client: Client) -> None:
    """Wait for the cluster's two workers; replace them if one does not come back.

    A killed worker comes back as a fresh process importing Dask and NumPy: on a loaded
    machine that alone can take a minute. A nanny whose restart fails under load closes for
    good, and a LocalCluster does not replace a closed nanny: then the pair is scaled away
    and started afresh, so that one slow restart does not fail every later test.
    """
    try:
        client.wait_for_workers(2, timeout=3 * TIMEOUT)
        return
    except WorkerStartTimeoutError:
        cluster = client.cluster
        assert cluster is not None
    cluster.scale(0)
    eventually_sync(lambda: not client.scheduler_info()["workers"], 60.0, "the old pair gone")
    cluster.scale(2)
    client.wait_for_workers(2, timeout=3 * TIMEOUT)


def _rows(engine: Engine) -> list[dict[str, object]]:
    """Generation rows without the wall-clock fields."""
    rows = []
    for row in engine.store.generation_rows(engine.run_id or 0):
        row = dict(row)
        for volatile in ("timestamp", "evaluation_ms"):
            row.pop(volatile)
        rows.append(row)
    return rows


def _population(engine: Engine) -> dict[str, np.ndarray]:
    """Every array of the engine's current population."""
    assert engine.population is not None
    return {name: getattr(engine.population, name) for name in engine.population.COLUMNS}


def _assert_same_run(engine: Engine, reference: Engine) -> None:
    """Generation rows, population arrays and random state are identical, bit for bit."""
    assert _rows(engine) == _rows(reference)
    ours, theirs = _population(engine), _population(reference)
    for name, values in theirs.items():
        assert ours[name].dtype == values.dtype, name
        assert ours[name].tobytes() == values.tobytes(), name
    assert engine.rng.bit_generator.state == reference.rng.bit_generator.state


def _run(problem: Problem, generations: int, executor: Any = None, **kwargs: Any) -> Engine:
    """An engine with seed 11 after ``generations`` generations."""
    engine = Engine(problem, seed=11, population_size=30, executor=executor, **kwargs)
    for _ in engine.run(generations=generations):
        pass
    return engine


def _first_gene_values(problem: Problem, seed: int, n: int) -> np.ndarray:
    """The initial population's genes of an engine with this seed (generation 0)."""
    return problem.gene_space.random(np.random.Generator(np.random.PCG64(seed)), n)


# -- chunking ------------------------------------------------------------------------------


def test_chunk_bounds_near_equal_contiguous() -> None:
    """62 rows at most 16 per chunk: four contiguous chunks of 16, 16, 15, 15."""
    bounds = chunk_bounds(62, 16)
    assert [stop - start for start, stop in bounds] == [16, 16, 15, 15]
    assert bounds[0][0] == 0
    assert bounds[-1][1] == 62
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [(5, 100, [5]), (5, 1, [1] * 5), (7, 3, [3, 2, 2]), (1, 1, [1]), (0, 4, [])],
)
def test_chunk_bounds_edge_cases(n: int, size: int, expected: list[int]) -> None:
    """Chunk larger than the population, one row per chunk, uneven splits, nothing to split."""
    assert [stop - start for start, stop in chunk_bounds(n, size)] == expected


def test_default_chunk_size_is_two_chunks_per_worker() -> None:
    """Without chunk_size, a pool of 3 workers gets ceil(n / 6) rows per chunk."""
    with cf.ThreadPoolExecutor(max_workers=3) as pool:
        evaluator = ExecutorEvaluator(pool)
        assert evaluator.workers() == 3
        assert evaluator.chunk_size_for(62) == 11
        assert evaluator.chunk_size_for(1) == 1
        assert ExecutorEvaluator(pool, chunk_size=5).chunk_size_for(62) == 5


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_invalid_chunk_size_is_refused(bad: Any) -> None:
    """chunk_size must be a positive integer."""
    with cf.ThreadPoolExecutor(max_workers=1) as pool, pytest.raises(InvalidParameters):
        Engine(Sphere(dims=2), executor=pool, chunk_size=bad)


def test_invalid_executor_is_refused() -> None:
    """Something without submit() is not an executor; chunk_size alone needs one."""
    with pytest.raises(InvalidParameters, match="Executor"):
        Engine(Sphere(dims=2), executor=object())
    with pytest.raises(InvalidParameters, match="needs an executor"):
        Engine(Sphere(dims=2), chunk_size=4)


# -- thread and process pools --------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 29, 1000])
def test_thread_pool_same_generations_as_serial(chunk_size: int | None) -> None:
    """Any chunking on a thread pool gives exactly the serial run."""
    reference = _run(AgentDesign(), 6)
    with cf.ThreadPoolExecutor(max_workers=3) as pool:
        engine = _run(AgentDesign(), 6, pool, chunk_size=chunk_size)
    _assert_same_run(engine, reference)


def test_process_pool_same_generations_as_serial(process_pool: cf.ProcessPoolExecutor) -> None:
    """A process pool gives exactly the serial run, chunked by default or unevenly."""
    reference = _run(Rastrigin(dims=5), 6)
    _assert_same_run(_run(Rastrigin(dims=5), 6, process_pool), reference)
    _assert_same_run(_run(Rastrigin(dims=5), 6, process_pool, chunk_size=7), reference)


class RecordingPool(cf.ThreadPoolExecutor):
    """A thread pool that records what each task is given."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers)
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Record the call, then submit it."""
        self.calls.append((fn, args))
        return super().submit(fn, *args, **kwargs)


def test_only_the_genes_of_each_chunk_travel() -> None:
    """Each task gets the problem, its chunk's rows and two integers: never the engine."""
    problem = Sphere(dims=3)
    with RecordingPool(max_workers=2) as pool:
        engine = Engine(problem, seed=2, population_size=20, executor=pool, chunk_size=6)
        engine.step()
    assert engine.population is not None
    assert [len(args[1]) for _, args in pool.calls] == [5, 5, 5, 5]
    for fn, (carried, chunk, row, first_agent, payload) in pool.calls:
        assert fn is evaluate_chunk
        assert carried is problem
        assert payload is None
        assert isinstance(chunk, np.ndarray)
        assert isinstance(row, int)
        assert first_agent == 1 + row
    genes = np.concatenate([args[1] for _, args in pool.calls])
    np.testing.assert_array_equal(np.sort(genes, axis=0), np.sort(engine.population.genes, axis=0))


class RecordingProcessPool(cf.ProcessPoolExecutor):
    """A process pool that records what each task carries for the problem."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, mp_context=SPAWN)
        self.carried: list[tuple[Any, PickledProblem | None]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Record the problem and payload arguments, then submit the call."""
        self.carried.append((args[0], args[4]))
        return super().submit(fn, *args, **kwargs)


def test_process_pool_unpickles_the_problem_once_per_worker_process(tmp_path: Path) -> None:
    """After its first use, tasks carry a token, and each worker unpickles the problem once."""
    log = tmp_path / "unpickled.log"
    log.touch()
    problem = CountingSphere(4, log)
    with RecordingProcessPool(max_workers=2) as pool:
        engine = _run(problem, 6, pool)
    carried = pool.carried
    assert all(isinstance(token, ProblemToken) for token, _ in carried)
    assert len({token for token, _ in carried}) == 1
    pids = Counter(log.read_text().split())
    assert 1 <= len(pids) <= 2  # the pool starts its processes when work arrives
    assert set(pids.values()) == {1}  # each worker process unpickled it exactly once
    # Chunks go out with the token only; a chunk that met a worker process without the
    # problem came back and was resent with it. A resend may land on the process that
    # already holds the problem, so the other one can miss again in a later generation: at
    # most every chunk of the run once (this bound was 4 per process, which failed about
    # one run in ten on a loaded machine).
    resent = [payload for _, payload in carried if payload is not None]
    assert 1 <= len(resent) <= 6 * 4
    assert len(carried) == 6 * 4 + len(resent)
    _assert_same_run(engine, _run(Sphere(dims=4), 6))


def test_engine_open_continues_with_an_executor(tmp_path: Path) -> None:
    """Engine.open(..., executor=) resumes a stored run exactly as the serial run goes on."""
    db = tmp_path / "runs.db"
    with Engine(Sphere(dims=4), seed=11, population_size=30, store=db) as first:
        list(first.run(generations=3))
        run_id = first.run_id
    assert run_id is not None
    with cf.ThreadPoolExecutor(max_workers=2) as pool, Engine.open(db, run_id, executor=pool) as e:
        list(e.run(generations=3))
        resumed = _rows(e)
    assert resumed == _rows(_run(Sphere(dims=4), 6))


# -- failures on pools ---------------------------------------------------------------------


def _trace(exc: BaseException) -> str:
    """An exception formatted with its chain, as Python prints it."""
    return "".join(traceback.format_exception(exc))


def _serial_error(problem: Problem, population_size: int = 30) -> EvaluationError:
    """The error a serial engine raises on its first generation."""
    engine = Engine(problem, seed=11, population_size=population_size)
    with pytest.raises(EvaluationError) as info:
        engine.step()
    return info.value


def _failing_function_problem(row: int) -> FunctionProblem:
    """A per-agent problem whose function raises for the agent of generation 0 ``row``."""
    space = [Float("x", -1.0, 1.0)]
    bad = float(_first_gene_values(FunctionProblem(FailOn(0.0), space), 11, 30)[row, 0])
    return FunctionProblem(FailOn(bad), space)


def test_user_exception_on_thread_pool_names_the_agent() -> None:
    """A raising fitness function in a later chunk names exactly that agent, as serially."""
    problem = _failing_function_problem(row=21)
    serial = _serial_error(problem)
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        engine = Engine(problem, seed=11, population_size=30, executor=pool, chunk_size=8)
        with pytest.raises(EvaluationError) as info:
            engine.step()
    error = info.value
    assert error.details["agent_id"] == "agent-22"  # row 21 of generation 0, ids start at 1
    assert error.details["row"] == 21
    assert error.details["generation"] == 0
    assert "ValueError: cannot simulate" in error.details["reason"]
    assert str(error) == str(serial)
    assert error.details == serial.details
    assert isinstance(error.__cause__, ValueError)
    assert engine.generation == -1
    assert engine.run_id is None


def test_user_exception_on_process_pool_keeps_the_remote_traceback(
    process_pool: cf.ProcessPoolExecutor,
) -> None:
    """From a worker process, the error names the agent and chains the worker's traceback."""
    problem = _failing_function_problem(row=9)
    with pytest.raises(EvaluationError) as info:
        Engine(problem, seed=11, population_size=30, executor=process_pool).step()
    error = info.value
    assert error.details["agent_id"] == "agent-10"
    assert str(error) == str(_serial_error(problem))
    cause = error.__cause__
    assert isinstance(cause, ValueError)
    assert "cannot simulate" in str(cause)
    assert isinstance(cause.__cause__, RemoteTraceback)  # a process pool drops tracebacks
    assert "in __call__" in _trace(cause)  # where it was raised, in FailOn


def test_batch_problem_exception_names_the_first_agent_of_its_chunk() -> None:
    """A batch problem that raises is reported at its chunk's first agent."""
    poison = _first_gene_values(Sphere(dims=2), 11, 30)[17]
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        engine = Engine(
            RaisingSphere(2, list(poison)), seed=11, population_size=30, executor=pool, chunk_size=8
        )
        with pytest.raises(EvaluationError, match="simulator diverged") as info:
            engine.step()
    # 30 rows at most 8 per chunk: 8, 8, 7, 7 -> row 17 is in the chunk of rows 16..22.
    assert info.value.details["row"] == 16
    assert info.value.details["agent_id"] == "agent-17"
    assert "rows 16..22" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_nan_from_a_chunk_names_the_agent() -> None:
    """Invalid values returned by a chunk name the agent, as the serial check does."""

    class NanAt7(Sphere):
        def evaluate(self, genes: np.ndarray) -> Any:
            result = super().evaluate(genes)
            hit = (genes == self.bad).all(axis=1)
            result.fitness[hit] = np.nan
            return result

    problem = NanAt7(dims=2)
    problem.bad = _first_gene_values(problem, 11, 30)[7]  # type: ignore[attr-defined]
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        engine = Engine(problem, seed=11, population_size=30, executor=pool, chunk_size=4)
        with pytest.raises(EvaluationError) as info:
            engine.step()
    assert info.value.details["agent_id"] == "agent-8"
    assert info.value.details["row"] == 7
    assert str(info.value) == str(_serial_error(problem))


def test_unpicklable_problem_for_a_process_pool_is_a_clear_error(
    process_pool: cf.ProcessPoolExecutor,
) -> None:
    """A problem holding a lambda cannot go to worker processes; the error says why."""
    problem = FunctionProblem(lambda genome: 0.0, [Float("x", 0.0, 1.0)])
    engine = Engine(problem, seed=1, population_size=10, executor=process_pool)
    with pytest.raises(EvaluationError, match="picklable"):
        engine.step()
    assert engine.generation == -1


def test_killed_process_pool_worker_is_one_clean_error(tmp_path: Path) -> None:
    """A worker process killed mid-generation: 'worker lost', the engine and store unchanged."""
    db = tmp_path / "runs.db"
    marker = tmp_path / "killed"
    problem = KillingSphere(3, marker, once=True)
    with cf.ProcessPoolExecutor(max_workers=2, mp_context=SPAWN) as pool:
        engine = Engine(problem, seed=11, population_size=30, store=db, executor=pool)
        marker.touch()  # no kill while the marker exists: generations 0..2 are normal
        list(engine.run(generations=3))
        rows_before = _rows(engine)
        population_before = _population(engine)
        rng_before = engine.rng.bit_generator.state
        marker.unlink()  # the next evaluation kills its worker process
        with pytest.raises(EvaluationError) as info:
            engine.step()
    reason = info.value.details["reason"]
    assert reason.startswith("worker lost: BrokenProcessPool")
    assert info.value.details["generation"] == 3
    assert engine.generation == 2
    assert engine.rng.bit_generator.state == rng_before
    assert _rows(engine) == rows_before
    for name, values in population_before.items():
        np.testing.assert_array_equal(_population(engine)[name], values)
    # A new pool continues exactly as if nothing had happened.
    with cf.ProcessPoolExecutor(max_workers=2, mp_context=SPAWN) as pool:
        resumed = Engine.open(db, engine.run_id or 0, problem, executor=pool)
        list(resumed.run(generations=2))
    _assert_same_run(resumed, _run(Sphere(dims=3), 5))
    engine.close()
    resumed.close()


@pytest.mark.parametrize("cloud", [False, True])
def test_shipped_arrays_get_aligned_writable_memory(cloud: bool) -> None:
    """Each array of a pickled problem travels out of band and loads aligned and writable."""
    probe = AlignmentProbe(3)
    pickled = pickle_problem(probe, cloud=cloud)
    # The arrays' bytes are buffers of their own, not inside the pickle stream.
    assert len(pickled.buffers) >= 4
    assert len(pickled.body) < 2000
    for _ in range(5):  # whatever offsets the allocator gives the copies
        loaded = load_problem(pickled)
        assert loaded.intact()
        for name, array in loaded.arrays.items():
            np.testing.assert_array_equal(array, probe.arrays[name])
            assert array.dtype == probe.arrays[name].dtype
        assert loaded.arrays["fortran"].flags.f_contiguous
    loaded.arrays["matrix"][0, 0] = 99.0  # writable, and not shared with the original
    assert probe.arrays["matrix"][0, 0] != 99.0
    assert BUFFER_ALIGNMENT == 64


def test_process_pool_workers_see_aligned_problem_data(
    process_pool: cf.ProcessPoolExecutor,
) -> None:
    """Fitness code on a process pool's workers runs on aligned, intact copies of the data."""
    evaluator = ExecutorEvaluator(process_pool, chunk_size=5)
    probe = AlignmentProbe(3)
    genes = _first_gene_values(probe, 4, 20)
    for _ in range(2):  # first tasks come back for the problem; then it is cached
        evaluation = evaluator.evaluate(probe, genes, 1)
        np.testing.assert_array_equal(evaluation.fitness, np.ones(20))


# -- Dask ------------------------------------------------------------------------------------


def test_dask_same_generations_as_serial(two_workers: Client) -> None:
    """A LocalCluster (2 processes) gives exactly the serial run; a Client is accepted too."""
    reference = _run(AgentDesign(), 6)
    engine = _run(AgentDesign(), 6, two_workers.get_executor())
    assert isinstance(engine._evaluator, ExecutorEvaluator)
    assert engine._evaluator.is_dask
    assert engine._evaluator.workers() == 2
    _assert_same_run(engine, reference)
    _assert_same_run(_run(AgentDesign(), 6, two_workers, chunk_size=4), reference)


def test_dask_user_exception_names_the_agent(two_workers: Client) -> None:
    """An exception in user fitness code on a Dask worker names exactly its agent."""
    problem = _failing_function_problem(row=26)
    engine = Engine(problem, seed=11, population_size=30, executor=two_workers)
    with pytest.raises(EvaluationError) as info:
        engine.step()
    error = info.value
    assert error.details["agent_id"] == "agent-27"
    assert error.details["row"] == 26
    assert str(error) == str(_serial_error(problem))
    assert isinstance(error.__cause__, ValueError)
    assert "in __call__" in _trace(error.__cause__)  # Dask keeps the worker's traceback
    assert engine.generation == -1


def test_dask_workers_see_aligned_problem_data(two_workers: Client) -> None:
    """On Dask workers too (Dask's own deserialization can leave arrays misaligned)."""
    evaluator = ExecutorEvaluator(two_workers.get_executor(), chunk_size=5)
    probe = AlignmentProbe(3)
    genes = _first_gene_values(probe, 4, 20)
    for _ in range(2):
        evaluation = evaluator.evaluate(probe, genes, 1)
        np.testing.assert_array_equal(evaluation.fitness, np.ones(20))


def _unpickled_by(log: Path) -> Counter[str]:
    """How many times each process unpickled the logged problem."""
    return Counter(log.read_text().split())


class RecordingClientExecutor(ClientExecutor):
    """Dask's executor, recording the payload argument of each task."""

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.payloads: list[Any] = []

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Record the payload argument, then submit the call."""
        self.payloads.append(args[4])
        return super().submit(fn, *args, **kwargs)


def test_dask_ships_the_problem_once_per_problem(two_workers: Client, tmp_path: Path) -> None:
    """The problem is scattered once (one unpickling per worker); tasks carry only a token."""
    log = tmp_path / "unpickled.log"
    log.touch()
    problem = CountingSphere(4, log)
    executor = RecordingClientExecutor(two_workers)
    engine = _run(problem, 5, executor, chunk_size=3)  # 10 chunks a generation
    counts = _unpickled_by(log)
    assert sum(counts.values()) == 2  # broadcast to the 2 workers, then never again
    assert set(counts.values()) == {1}
    assert len(executor.payloads) == 5 * 10
    assert all(payload is None for payload in executor.payloads)  # no task waits on data
    _assert_same_run(engine, _run(Sphere(dims=4), 5))
    # A new problem object is shipped again, once.
    other = CountingSphere(4, log)
    evaluator = engine._evaluator
    genes = _first_gene_values(other, 3, 12)
    evaluator.evaluate(other, genes, 1)
    evaluator.evaluate(other, genes, 1)
    assert sum(_unpickled_by(log).values()) == 4


class PinnableClientExecutor(ClientExecutor):
    """Dask's executor whose tasks can be pinned to chosen workers."""

    def pin(self, workers: list[str] | None) -> None:
        """Run the next tasks only on ``workers`` (``None``: anywhere)."""
        self._kwargs = {} if workers is None else {"workers": workers, "allow_other_workers": False}


def test_dask_worker_joining_later_fetches_the_problem_once(
    two_workers: Client, tmp_path: Path
) -> None:
    """A worker added after the problem was shipped gets it from a peer with its first chunk."""
    log = tmp_path / "unpickled.log"
    log.touch()
    executor = PinnableClientExecutor(two_workers)
    engine = Engine(CountingSphere(4, log), seed=11, population_size=30, executor=executor)
    engine.step()
    assert sum(_unpickled_by(log).values()) == 2
    cluster = two_workers.cluster
    assert cluster is not None
    before = set(two_workers.nthreads())
    cluster.scale(3)
    try:
        two_workers.wait_for_workers(3, timeout=TIMEOUT)
        (joined,) = set(two_workers.nthreads()) - before
        # Pinned, so the new worker surely runs chunks (the scheduler alone might not use it).
        executor.pin([joined])
        list(engine.run(generations=2))
        executor.pin(None)
        list(engine.run(generations=2))
    finally:
        cluster.scale(2)
        _wait_until(lambda: len(two_workers.nthreads()) == 2)
    counts = _unpickled_by(log)
    assert len(counts) == 3
    assert set(counts.values()) == {1}
    _assert_same_run(engine, _run(Sphere(dims=4), 5))


def test_dask_restarted_cluster_gets_the_problem_again(two_workers: Client, tmp_path: Path) -> None:
    """After every worker restarted (its copy of the problem lost), the problem is shipped anew."""
    log = tmp_path / "unpickled.log"
    log.touch()
    engine = Engine(CountingSphere(4, log), seed=11, population_size=30, executor=two_workers)
    list(engine.run(generations=2))
    two_workers.restart(timeout=TIMEOUT, wait_for_workers=True)
    list(engine.run(generations=3))
    assert sum(_unpickled_by(log).values()) == 4  # 2 workers, twice
    _assert_same_run(engine, _run(Sphere(dims=4), 5))


def _wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds, at most TIMEOUT seconds."""
    eventually_sync(condition, TIMEOUT / SCALE)


def test_dask_worker_killed_mid_generation_completes_on_the_survivor(
    two_workers: Client, tmp_path: Path
) -> None:
    """A worker killed mid-generation: Dask reruns its chunk elsewhere; the run is exact."""
    db = tmp_path / "runs.db"
    marker = tmp_path / "killed"
    marker.touch()  # no kill while the marker exists
    problem = KillingSphere(3, marker, once=True)
    engine = Engine(problem, seed=11, population_size=30, store=db, executor=two_workers)
    engine.step()
    pids_before = set(two_workers.run(os.getpid).values())
    marker.unlink()  # the first chunk of generation 1 to run kills its worker
    list(engine.run(generations=4))
    assert marker.exists()  # the kill happened
    assert set(two_workers.run(os.getpid).values()) != pids_before  # ...to one of the workers
    _assert_same_run(engine, _run(Sphere(dims=3), 5))
    assert [row["generation"] for row in _rows(engine)] == [0, 1, 2, 3, 4]
    engine.close()


def _set_allowed_failures(dask_scheduler: Any, count: int) -> int:
    """Set the scheduler's allowed-failures; return the previous value."""
    previous: int = dask_scheduler.allowed_failures
    dask_scheduler.allowed_failures = count
    return previous


def test_dask_worker_lost_for_good_is_one_clean_error(two_workers: Client, tmp_path: Path) -> None:
    """A chunk that kills every worker it runs on: 'worker lost', engine and store unchanged."""
    db = tmp_path / "runs.db"
    marker = tmp_path / "armed"
    problem = KillingSphere(3, marker, once=False)
    engine = Engine(
        problem, seed=11, population_size=30, store=db, executor=two_workers, chunk_size=30
    )
    list(engine.run(generations=3))
    rows_before = _rows(engine)
    population_before = _population(engine)
    previous = two_workers.run_on_scheduler(_set_allowed_failures, count=0)
    try:
        marker.touch()
        with pytest.raises(EvaluationError) as info:
            engine.step()
    finally:
        two_workers.run_on_scheduler(_set_allowed_failures, count=previous)
        marker.unlink()
    assert info.value.details["reason"].startswith("worker lost: KilledWorker")
    assert info.value.details["generation"] == 3
    assert "agent_id" not in info.value.details
    assert engine.generation == 2
    assert _rows(engine) == rows_before  # the store keeps every completed generation
    for name, values in population_before.items():
        np.testing.assert_array_equal(_population(engine)[name], values)
    # Retried once the cause is gone, the generation is exactly the one it would have been.
    list(engine.run(generations=2))
    _assert_same_run(engine, _run(Sphere(dims=3), 5))
    engine.close()


# -- options and imports -------------------------------------------------------------------


def _tdevlab(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "tdevlab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=TIMEOUT,
    )


def test_cli_run_on_dask_and_processes_matches_serial(two_workers: Client, tmp_path: Path) -> None:
    """`tdevlab run --dask-scheduler` and `--workers 2` print the same summary as serially."""
    common = ["run", "--generations", "8", "--population-size", "40", "--seed", "5", "--quiet"]
    serial = _tdevlab(*common, cwd=tmp_path)
    address = two_workers.scheduler_info()["address"]
    on_dask = _tdevlab(*common, "--dask-scheduler", address, cwd=tmp_path)
    on_pool = _tdevlab(*common, "--workers", "2", cwd=tmp_path)
    assert serial.returncode == 0, serial.stderr
    assert on_dask.returncode == 0, on_dask.stderr
    assert on_pool.returncode == 0, on_pool.stderr
    assert "generation 7: best" in serial.stdout
    assert on_dask.stdout == serial.stdout
    assert on_pool.stdout == serial.stdout


def test_cli_refuses_bad_distributed_options(tmp_path: Path) -> None:
    """Both options at once, or an unreachable scheduler, are one clear error line."""
    both = _tdevlab("run", "--dask-scheduler", "tcp://127.0.0.1:1", "--workers", "2", cwd=tmp_path)
    assert both.returncode == 2
    assert "tdevlab: error: choose one of --dask-scheduler and --workers" in both.stderr
    zero = _tdevlab("run", "--workers", "0", cwd=tmp_path)
    assert zero.returncode == 2
    assert "must be a positive integer" in zero.stderr


def test_unreachable_scheduler_is_invalid_parameters() -> None:
    """A scheduler address nobody answers is refused, naming the address."""
    with pytest.raises(InvalidParameters, match="cannot reach the Dask scheduler at 'tcp://127"):
        executor_from_options("tcp://127.0.0.1:1", timeout=timeout(1.0))


def test_executor_from_options_makes_a_process_pool() -> None:
    """--workers N is a pool of N processes; no option is no executor."""
    pool, close = executor_from_options(workers=2)
    try:
        assert isinstance(pool, cf.ProcessPoolExecutor)
        assert ExecutorEvaluator(pool).workers() == 2
    finally:
        close()
    assert executor_from_options()[0] is None


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python code in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )


def test_core_never_imports_dask() -> None:
    """The engine with a thread or process pool runs without loading dask or distributed."""
    code = (
        "import sys, concurrent.futures as cf\n"
        "from tdevlab import Engine, Sphere\n"
        "from tdevlab.engine.distributed import executor_from_options\n"
        "import tdevlab.cli\n"
        "with cf.ThreadPoolExecutor(2) as pool:\n"
        "    list(Engine(Sphere(dims=2), seed=1, population_size=8, executor=pool).run(3))\n"
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_dask_says_how_to_install_it() -> None:
    """Without Dask, --dask-scheduler is refused with 'pip install tdevlab[dask]'."""
    code = (
        "import sys\n"
        "sys.modules['distributed'] = None  # as if Dask were not installed\n"
        "from tdevlab.cli import main\n"
        "raise SystemExit(main(['run', '--dask-scheduler', 'tcp://127.0.0.1:8786']))\n"
    )
    out = _python(code)
    assert out.returncode == 2
    assert "tdevlab: error: --dask-scheduler needs Dask" in out.stderr
    assert "pip install 'tdevlab[dask]'" in out.stderr


def test_dask_default_is_one_chunk_per_worker_thread(two_workers: Client) -> None:
    """With Dask, the default chunking gives each worker thread one chunk per generation."""
    evaluator = ExecutorEvaluator(two_workers.get_executor())
    assert evaluator.workers() == 2
    assert evaluator.chunk_size_for(64) == 32
    assert evaluator.chunk_size_for(63) == 32
    assert ExecutorEvaluator(two_workers.get_executor(), chunk_size=5).chunk_size_for(64) == 5
