"""Distributed fitness evaluation: any ``concurrent.futures`` executor, Dask for clusters.

The engine evaluates each generation's new agents through an evaluator:

* :class:`SerialEvaluator` (no executor, the default) calls ``problem.evaluate(genes)`` in
  the engine's thread, with no overhead.
* :class:`ExecutorEvaluator` splits the genes matrix into contiguous row chunks of near
  equal size (at most ``chunk_size`` rows; by default two chunks per worker of a pool, one
  per Dask worker thread), evaluates each
  chunk as one task of the executor, and joins the results in row order. Only a chunk's
  genes and two integers travel with its task, never the engine. The run is the same with
  or without an executor, bit for bit: the engine draws every random number itself, and a
  problem scores each row independently of the other rows of its batch (a problem whose
  scores depend on the batch, such as ranks within it, must not be chunked).

How the problem reaches the workers: once, not per chunk.

* ``ThreadPoolExecutor``: not at all, threads share the object.
* Other executors: the problem is pickled once on the engine's side, and a task carries a
  token naming it. Each worker process unpickles the problem the first time it meets the
  token and keeps it (the newest ``WORKER_CACHE_SIZE`` problems).

  A task goes out with the token alone; a worker process that does not know it answers
  so, and that chunk alone is sent again with the pickled bytes.

  - Dask (``client.get_executor()``): the pickled bytes (cloudpickle) are scattered to
    every worker once (``client.scatter(..., broadcast=True)``) and unpickled there at once
    (``client.run``); a worker that joins later fetches them from a peer with its first
    chunk. They are shipped again only for another problem object, or after every worker
    holding them died. Unpickling the bytes ourselves, rather than scattering the object,
    gives each NumPy array of the problem its own memory aligned on a cache line (see
    :class:`PickledProblem`): Dask's zero-copy deserialization left arrays inside an object
    misaligned, and matrix products on them ran up to 7 times slower.
  - ``ProcessPoolExecutor`` and others: the first chunks of each worker process come back
    unanswered once; the bytes then travel with them. The problem must pickle with the
    standard ``pickle`` (no lambdas).

Failures end as one :class:`~tdevlab.exceptions.EvaluationError`, and the remaining chunks
are cancelled:

* an exception in the problem's code (or invalid values it returns) names the agent: the
  row of the first failing agent in row order, so the error is the one a serial run gives
  (a batch problem that raises names the first agent of its chunk). The exception is raised
  from the original one, whose traceback on the worker is attached below it.
* a worker that dies: Dask moves its tasks to the surviving workers by itself (up to its
  ``distributed.scheduler.allowed-failures``); when it gives up (``KilledWorker``), or a
  process pool breaks (``BrokenProcessPool``), the reason is ``worker lost: ...``.

The engine restores its random state when a generation fails, so evaluating again
repeats that generation exactly, and the store keeps every completed generation.

Dask is never imported here: a Dask executor is recognized by its ``_client`` attribute,
and :func:`executor_from_options` imports it only to connect to a scheduler.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import pickle
import threading
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np

from tdevlab.engine.genes import FloatArray
from tdevlab.engine.problems import Evaluation, Problem, check_evaluation
from tdevlab.engine.shipping import (
    BUFFER_ALIGNMENT,
    PickledProblem,
    load_problem,
    pickle_problem,
)
from tdevlab.exceptions import EvaluationError, InvalidParameters

__all__ = [
    "BUFFER_ALIGNMENT",
    "WORKER_CACHE_SIZE",
    "ChunkFailure",
    "Evaluator",
    "ExecutorEvaluator",
    "PickledProblem",
    "ProblemToken",
    "RemoteTraceback",
    "SerialEvaluator",
    "chunk_bounds",
    "evaluate_chunk",
    "executor_from_options",
    "load_problem",
    "make_evaluator",
]

#: How many problems a worker process keeps (the newest); older ones are dropped.
WORKER_CACHE_SIZE = 4


# Exception types (by name, so Dask need not be imported) meaning "the worker went away".
_LOST_WORKER_TYPES = frozenset({"KilledWorker", "CommClosedError", "FutureCancelledError"})


class Evaluator(Protocol):
    """How the engine evaluates a generation's genes."""

    def evaluate(self, problem: Problem, genes: FloatArray, first_id: int) -> Any:
        """Evaluate ``genes`` (agents ``first_id``, ``first_id + 1``, ...) with ``problem``."""
        ...

    def close(self) -> None:
        """Release what the evaluator holds on workers (not the executor itself)."""
        ...


class SerialEvaluator:
    """Evaluate in the caller's thread: ``problem.evaluate(genes)``, nothing more."""

    def evaluate(self, problem: Problem, genes: FloatArray, first_id: int) -> Any:
        """Return ``problem.evaluate(genes)`` unchecked (the engine checks it)."""
        return problem.evaluate(genes)

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "SerialEvaluator()"


class ProblemToken(NamedTuple):
    """What a task carries instead of the problem, for executors without shared memory."""

    token: str


class _Shipment(NamedTuple):
    """A problem as shipped to the workers."""

    problem: Problem  # compared by identity: another object is shipped again
    carried: Any  # each task's first argument: the problem itself (threads) or its token
    payload: Any  # the pickled problem: a PickledProblem, a Dask future of one, or None


class ChunkFailure(NamedTuple):
    """A chunk whose problem code raised or returned invalid values (sent back as a value)."""

    message: str
    details: dict[str, Any]
    original: BaseException | None  # the problem's exception, when it can travel
    traceback: str  # the original's traceback, formatted on the worker


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a worker, shown below the error it caused."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


# -- the worker side -----------------------------------------------------------------------

_worker_problems: OrderedDict[str, Any] = OrderedDict()
_worker_lock = threading.Lock()


def _worker_problem(token: str, payload: PickledProblem | None) -> Any:
    """The problem of a token in this worker process, unpickled on first use; None if unknown."""
    with _worker_lock:
        problem = _worker_problems.get(token)
        if problem is not None:
            _worker_problems.move_to_end(token)
            return problem
        if payload is None:
            return None
        problem = load_problem(payload)
        _worker_problems[token] = problem
        while len(_worker_problems) > WORKER_CACHE_SIZE:
            _worker_problems.popitem(last=False)
        return problem


def _install_scattered(token: str, key: Any, dask_worker: Any) -> None:
    """Unpickle the problem a Dask worker holds under ``key`` (run on every worker)."""
    _worker_problem(token, dask_worker.data[key])


def evaluate_chunk(
    problem: Problem | ProblemToken,
    genes: FloatArray,
    row: int,
    first_agent_id: int,
    payload: PickledProblem | None = None,
) -> Evaluation | ChunkFailure | None:
    """Evaluate one chunk on a worker (the task function of :class:`ExecutorEvaluator`).

    Args:
        problem: The problem, or a :class:`ProblemToken` naming it.
        genes: The chunk's rows of the generation's genes matrix.
        row: The chunk's first row in the generation.
        first_agent_id: The agent number of that row.
        payload: The pickled problem of the token, unpickled only if this worker process
            does not hold it yet.

    Returns:
        The chunk's checked evaluation; a :class:`ChunkFailure` (a value, not an exception,
        so it is never mistaken for a lost worker nor retried) when the problem fails; or
        ``None`` when ``problem`` is a token this worker process does not know.
    """
    n = genes.shape[0]
    target: Problem
    if isinstance(problem, ProblemToken):
        try:
            resolved = _worker_problem(problem.token, payload)
        except Exception as exc:
            return _chunk_failure(
                exc, f"cannot load the problem on worker process {os.getpid()}", row, n
            )
        if resolved is None:
            return None
        target = resolved
    else:
        target = problem
    try:
        raw = target.evaluate(genes)
        return check_evaluation(raw, n, np.arange(first_agent_id, first_agent_id + n))
    except Exception as exc:
        return _chunk_failure(exc, f"{type(target).__name__}.evaluate failed", row, n)


def _chunk_failure(exc: Exception, context: str, row: int, n: int) -> ChunkFailure:
    """Describe a failure in a chunk with rows and messages of the whole generation."""
    if isinstance(exc, EvaluationError):
        details = dict(exc.details)
        message = exc.message
        local = details.get("row")
        if isinstance(local, int):
            # FunctionProblem and check_evaluation count rows within the chunk.
            details["row"] = row + local
            suffix = f"(row {local})"
            if message.endswith(suffix):
                message = f"{message[: -len(suffix)]}(row {row + local})"
        else:
            details["row"] = row
            message = f"{message} (rows {row}..{row + n - 1})"
        original: BaseException | None = exc.__cause__  # the user's exception, if any
    else:
        reason = f"{type(exc).__name__}: {exc}"
        message = f"{context}: {reason} (rows {row}..{row + n - 1})"
        details = {"reason": reason, "row": row}
        original = exc
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.dumps(original)
    except Exception:
        original = None  # the formatted traceback still tells what happened
    return ChunkFailure(message, details, original, text)


# -- the engine side -----------------------------------------------------------------------


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """Split ``n`` rows into ``ceil(n / chunk_size)`` contiguous chunks of near equal size.

    Sizes differ by at most one (62 rows at most 16 per chunk: 16, 16, 15, 15), so the
    workers finish together.

    Returns:
        ``(start, stop)`` row ranges, in order.
    """
    if n <= 0:
        return []
    count = math.ceil(n / max(chunk_size, 1))
    size, larger = divmod(n, count)  # the first `larger` chunks get one row more
    bounds = []
    start = 0
    for i in range(count):
        stop = start + size + (i < larger)
        bounds.append((start, stop))
        start = stop
    return bounds


class ExecutorEvaluator:
    """Evaluate a generation in chunks on a ``concurrent.futures`` executor (or Dask).

    Args:
        executor: Any ``concurrent.futures.Executor``: a ``ThreadPoolExecutor``, a
            ``ProcessPoolExecutor``, Dask's ``client.get_executor()``, ...
        chunk_size: Most rows per task; ``None`` gives two chunks per worker of a pool
            (``ceil(n / (2 * workers))``, so a worker that finishes early takes more) and one
            per Dask worker thread (``ceil(n / threads)``: Dask's scheduler holds back tasks
            beyond a worker's threads, so every further chunk per worker costs a scheduler
            round trip — measured 12% of a generation against 4% with one chunk each).

    Raises:
        InvalidParameters: if ``chunk_size`` is not a positive integer.
    """

    def __init__(self, executor: Any, chunk_size: int | None = None) -> None:
        self.executor = executor
        self.chunk_size = _check_chunk_size(chunk_size)
        self._client: Any = getattr(executor, "_client", None)  # a Dask ClientExecutor
        self._threads = isinstance(executor, cf.ThreadPoolExecutor)
        self._shipment: _Shipment | None = None
        self._lock = threading.Lock()

    @property
    def is_dask(self) -> bool:
        """Whether the executor is a Dask client's executor."""
        return self._client is not None

    def workers(self) -> int:
        """How many tasks the executor runs at once (Dask: threads over all workers)."""
        if self._client is not None:
            threads: dict[str, int] = self._client.nthreads()
            return max(sum(threads.values()), 1)
        count = getattr(self.executor, "_max_workers", None)
        if isinstance(count, int) and count > 0:
            return count
        return os.cpu_count() or 1

    def chunk_size_for(self, n: int) -> int:
        """The most rows per chunk for ``n`` rows: ``chunk_size``, or the default above."""
        if self.chunk_size is not None:
            return self.chunk_size
        per_worker = 1 if self.is_dask else 2
        return max(math.ceil(n / (per_worker * self.workers())), 1)

    def evaluate(self, problem: Problem, genes: FloatArray, first_id: int) -> Evaluation:
        """Evaluate ``genes`` chunk by chunk; the results come back in row order.

        Raises:
            EvaluationError: when the problem fails (naming the first failing row's agent
                in details ``row``; the engine adds ``agent_id``), when a worker is lost
                (reason ``worker lost: ...``), or when the executor refuses the work.
        """
        n = genes.shape[0]
        if n == 0:
            empty = np.zeros(0)
            return Evaluation(empty, empty.copy(), empty.copy())
        bounds = chunk_bounds(n, self.chunk_size_for(n))
        with self._lock:
            shipment = self._ship(problem)
        # A task carries the pickled problem only when its worker answered that it does
        # not hold it yet (a worker that joined or restarted since the problem was shipped).
        extra = {"pure": False} if self._client is not None else {}

        def submit(i: int, payload: Any) -> cf.Future[Any]:
            start, stop = bounds[i]
            return self.executor.submit(  # type: ignore[no-any-return]
                evaluate_chunk,
                shipment.carried,
                genes[start:stop],
                start,
                first_id + start,
                payload,
                **extra,
            )

        results: list[Evaluation | None] = [None] * len(bounds)
        failures: dict[int, ChunkFailure] = {}
        index: dict[cf.Future[Any], int] = {}
        try:
            for i in range(len(bounds)):
                index[submit(i, None)] = i
            waiting = set(index)
            while waiting:
                done, waiting = cf.wait(waiting, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    i = index[future]
                    outcome = future.result()
                    if outcome is None:  # a worker process without this problem yet
                        again = submit(i, shipment.payload)
                        index[again] = i
                        waiting.add(again)
                    elif isinstance(outcome, ChunkFailure):
                        failures[i] = outcome
                    else:
                        results[i] = outcome
                if failures:
                    # Later chunks cannot change the error (it names the first failing row).
                    first = min(failures)
                    for future in [f for f in waiting if index[f] > first]:
                        future.cancel()
                        waiting.discard(future)
        except BaseException as exc:
            for future in index:
                future.cancel()
            if isinstance(exc, Exception) and not isinstance(exc, EvaluationError):
                raise _executor_error(exc) from exc
            raise
        if failures:
            error, cause = _failure_error(failures[min(failures)])
            raise error from cause
        parts = [r for r in results if r is not None]
        return Evaluation(*(np.concatenate(column) for column in zip(*parts, strict=True)))

    def _ship(self, problem: Problem) -> _Shipment:
        """Ship ``problem`` to the workers, unless this very object already is."""
        shipment = self._shipment
        # Scattered bytes are gone once every worker holding them died: ship them again.
        if (
            shipment is not None
            and shipment.problem is problem
            and getattr(shipment.payload, "status", "finished") == "finished"
        ):
            return shipment
        self._shipment = None
        if self._threads:
            shipment = _Shipment(problem, problem, None)
        elif self._client is not None:
            shipment = self._ship_to_dask(problem)
        else:
            payload = pickle_problem(problem, cloud=False)
            shipment = _Shipment(problem, ProblemToken(uuid.uuid4().hex), payload)
        self._shipment = shipment
        return shipment

    def _ship_to_dask(self, problem: Problem) -> _Shipment:
        """Scatter the pickled problem to every worker, and unpickle it there once.

        Tasks do not depend on the scattered bytes: Dask's active memory manager soon drops
        the extra copies of data no task waits for, and the scheduler then sends the tasks
        that depend on it to the one worker left holding it (measured: 1.1-1.5 s instead of
        0.75 s per generation of the benchmark). Only the task of a worker without the
        problem (one that joined or restarted later) gets the bytes, from a peer.
        """
        token = ProblemToken(uuid.uuid4().hex)
        payload = pickle_problem(problem, cloud=True)
        try:
            future = self._client.scatter([payload], broadcast=True, hash=False)[0]
        except Exception as exc:
            reason = f"scatter failed: {type(exc).__name__}: {exc}"
            raise EvaluationError(
                f"cannot send the problem to the Dask workers: {reason}",
                details={"reason": reason},
            ) from exc
        # A worker that fails here (gone, or cannot unpickle) is dealt with by its first task.
        self._client.run(_install_scattered, token.token, future.key, on_error="ignore")
        return _Shipment(problem, token, future)

    def close(self) -> None:
        """Forget the shipped problem (Dask releases its scattered copies)."""
        with self._lock:
            self._shipment = None

    def __repr__(self) -> str:
        return f"ExecutorEvaluator({self.executor!r}, chunk_size={self.chunk_size})"


def _failure_error(failure: ChunkFailure) -> tuple[EvaluationError, BaseException]:
    """The error of a chunk's failure, and the original exception to raise it from."""
    remote = RemoteTraceback(failure.traceback)
    original = failure.original
    if original is None:
        cause: BaseException = remote
    else:
        cause = original
        if original.__traceback__ is None and original.__cause__ is None:
            original.__cause__ = remote  # it crossed a process boundary: show where it began
    return EvaluationError(failure.message, details=dict(failure.details)), cause


def _executor_error(exc: Exception) -> EvaluationError:
    """The error of an exception from the executor itself: a lost worker, a refusal, ..."""
    kind = type(exc).__name__
    lost = isinstance(exc, cf.BrokenExecutor | cf.CancelledError) or kind in _LOST_WORKER_TYPES
    text = str(exc) or "no message"
    reason = f"{'worker lost' if lost else 'executor failed'}: {kind}: {text}"
    return EvaluationError(f"distributed evaluation failed: {reason}", details={"reason": reason})


def _check_chunk_size(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
        raise InvalidParameters(f"chunk_size={chunk_size!r} must be a positive integer")
    if chunk_size < 1:
        raise InvalidParameters(f"chunk_size={chunk_size!r} must be a positive integer")
    return int(chunk_size)


def make_evaluator(executor: Any = None, chunk_size: int | None = None) -> Evaluator:
    """Return the evaluator for an engine's ``executor`` and ``chunk_size`` arguments.

    Args:
        executor: ``None`` (evaluate in the engine's thread), any
            ``concurrent.futures.Executor``, or a ``distributed.Client`` (its
            ``get_executor()`` is used).
        chunk_size: Most rows per task (only with an executor).

    Raises:
        InvalidParameters: for something that is not an executor, or a bad ``chunk_size``.
    """
    if executor is None:
        if chunk_size is not None:
            raise InvalidParameters("chunk_size needs an executor (executor=...)")
        return SerialEvaluator()
    if not hasattr(executor, "submit") or not callable(executor.submit):
        raise InvalidParameters(
            f"executor must be a concurrent.futures.Executor or a dask.distributed.Client, "
            f"got {type(executor).__name__}"
        )
    if hasattr(executor, "get_executor") and hasattr(executor, "scatter"):
        executor = executor.get_executor()  # a distributed.Client
    return ExecutorEvaluator(executor, chunk_size)


def executor_from_options(
    dask_scheduler: str | None = None, workers: int | None = None, *, timeout: float = 10.0
) -> tuple[Any, Callable[[], None]]:
    """Make the executor of command-line options (``--dask-scheduler``, ``--workers``).

    Args:
        dask_scheduler: Address of a running Dask scheduler (``tcp://host:8786``).
        workers: Number of local worker processes (a ``ProcessPoolExecutor``).
        timeout: Seconds to wait for the scheduler to answer.

    Returns:
        The executor (``None`` when neither option is given) and a function that closes it
        (disconnecting from the scheduler, or shutting the pool down).

    Raises:
        InvalidParameters: if both options are given, ``workers`` is not positive, Dask is
            not installed, or the scheduler cannot be reached.
    """
    if dask_scheduler is not None and workers is not None:
        raise InvalidParameters("choose one of --dask-scheduler and --workers")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidParameters(f"workers={workers!r} must be a positive integer")
        pool = cf.ProcessPoolExecutor(max_workers=workers)

        def shutdown() -> None:
            pool.shutdown(wait=True, cancel_futures=True)

        return pool, shutdown
    if dask_scheduler is None:
        return None, lambda: None
    import importlib

    try:
        distributed: Any = importlib.import_module("distributed")
    except ImportError as exc:
        raise InvalidParameters(
            f"--dask-scheduler needs Dask ({exc}): pip install 'tdevlab[dask]'"
        ) from exc
    try:
        client = distributed.Client(dask_scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InvalidParameters(
            f"cannot reach the Dask scheduler at {dask_scheduler!r}: {type(exc).__name__}: {exc}"
        ) from exc
    return client.get_executor(), client.close
