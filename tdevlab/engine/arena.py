"""Memory for the arrays a run keeps, carved from large slabs.

A run keeps every generation's population for rollback (the memory store holds hundreds of
snapshots), so each generation's arrays are memory the process has never touched: a fresh
256 KB genes matrix costs a page fault per 4 KiB page, about ten times what copying into it
costs (measured at 1000 x 32: ~100 µs fresh, ~9 µs when the memory is reused). Carved from
slabs of :data:`SLAB_BYTES`, which NumPy asks the kernel to back with huge pages, the same
block costs ~60 µs. The price: a slab is freed when the last array carved from it is, so a
process may hold up to one slab more per thread than its arrays' sizes add up to.

Arrays from here are ordinary C-ordered arrays (views of a slab); pickling or ``tobytes``
copies only their own bytes.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import numpy.typing as npt

from tdevlab.engine.genes import FloatArray

__all__ = ["SLAB_BYTES", "empty", "take_rows"]

#: Bytes per slab: above NumPy's 4 MiB threshold for asking for huge pages.
SLAB_BYTES = 16 << 20
#: Blocks larger than this are allocated on their own (a slab would hold too few).
_LARGEST = SLAB_BYTES // 8
#: Each block starts on a cache line.
_ALIGN = 64

_local = threading.local()  # per thread: engines in several threads never share a cursor


def empty(shape: tuple[int, ...], dtype: npt.DTypeLike = np.float64) -> npt.NDArray[np.generic]:
    """An uninitialised C-ordered array of ``shape``, carved from the thread's slab."""
    kind = np.dtype(dtype)
    nbytes = math.prod(shape) * kind.itemsize
    if nbytes == 0 or nbytes > _LARGEST:
        return np.empty(shape, kind)
    slab: npt.NDArray[np.uint8] | None = getattr(_local, "slab", None)
    offset: int = getattr(_local, "offset", 0)
    if slab is None or offset + nbytes > slab.size:
        slab, offset = np.empty(SLAB_BYTES, np.uint8), 0
        _local.slab = slab
    _local.offset = offset + -(-nbytes // _ALIGN) * _ALIGN
    return slab[offset : offset + nbytes].view(kind).reshape(shape)


def take_rows(matrix: FloatArray, rows: npt.NDArray[np.int64]) -> FloatArray:
    """``matrix[rows]`` as a new array carved from a slab.

    ``rows`` must index ``matrix`` (no bounds check: callers pass rows they selected).
    """
    out: FloatArray = empty((rows.size, *matrix.shape[1:]), matrix.dtype)  # type: ignore[assignment]
    # mode="clip" writes straight into `out`; "raise" would go through a temporary.
    np.take(matrix, rows, axis=0, out=out, mode="clip")
    return out
