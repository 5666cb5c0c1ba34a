"""Shipping a problem to worker processes: pickled once, its arrays aligned on arrival.

See :class:`PickledProblem` for why the arrays travel out of band and get aligned memory.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from tdevlab.engine.problems import Problem
from tdevlab.exceptions import EvaluationError

__all__ = ["BUFFER_ALIGNMENT", "PickledProblem", "load_problem", "pickle_problem"]

#: Byte alignment of the memory a worker gives each array of an unpickled problem.
BUFFER_ALIGNMENT = 64


class PickledProblem(NamedTuple):
    """A problem pickled for worker processes: the pickle stream and its data buffers.

    The buffers are the problem's C- or Fortran-contiguous NumPy arrays (and other objects
    that pickle buffers out of band, such as pandas and pyarrow data), pickled out of band
    (pickle protocol 5), so that each worker can give every one memory aligned to
    ``BUFFER_ALIGNMENT`` bytes; other arrays (object dtype, non-contiguous views) travel
    inside the pickle stream. In-band pickles, and Dask's own deserialization, leave
    arrays at whatever offset their bytes land on; fitness code on arrays that do not
    start on a cache line was measured 17% slower (an array product 8 bytes off a cache
    line; one 1 byte off an 8-byte boundary, as Dask can leave it, about 7 times slower).
    """

    body: bytes
    buffers: tuple[bytes, ...]


def load_problem(pickled: PickledProblem) -> Any:
    """Unpickle a :class:`PickledProblem`, each buffer copied to aligned, writable memory."""
    aligned = []
    for raw in pickled.buffers:
        block = np.empty(len(raw) + BUFFER_ALIGNMENT, dtype=np.uint8)
        offset = -block.ctypes.data % BUFFER_ALIGNMENT
        view = block[offset : offset + len(raw)]
        view[:] = np.frombuffer(raw, dtype=np.uint8)
        aligned.append(view)
    return pickle.loads(pickled.body, buffers=aligned)


def pickle_problem(problem: Problem, *, cloud: bool) -> PickledProblem:
    """Pickle a problem for worker processes (with cloudpickle for Dask, as Dask would)."""
    dumps: Callable[..., bytes] = pickle.dumps
    if cloud:
        dumps = importlib.import_module("cloudpickle").dumps  # a dependency of Dask
    buffers: list[pickle.PickleBuffer] = []
    try:
        body = dumps(problem, protocol=5, buffer_callback=buffers.append)
        return PickledProblem(body, tuple(buffer.raw().tobytes() for buffer in buffers))
    except Exception as exc:
        reason = f"problem not picklable: {type(exc).__name__}: {exc}"
        raise EvaluationError(
            f"cannot pickle the problem for the executor's worker processes: "
            f"{type(exc).__name__}: {exc} (a problem for a process pool must pickle with "
            "the standard pickle: no lambdas or local functions; Dask uses cloudpickle)",
            details={"reason": reason},
        ) from exc
