"""What the adapters share: the optional import, the pickled state, the global random
state guard, and the gene space as a box of coordinates."""

from __future__ import annotations

import base64
import copyreg
import importlib
import io
import itertools
import pickle
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Literal

import numpy as np

from tdevlab.engine.genes import FloatArray, GeneSpace, bounded
from tdevlab.exceptions import EvolutionFailed, MissingExtra

#: Fresh tokens that pair an ``ask`` with its ``tell`` (the asked batch is not in a snapshot).
_TOKENS = itertools.count(1)


def require(module: str, extra: str, strategy: str) -> ModuleType:
    """Import an optional library, or say which extra brings it in.

    Raises:
        MissingExtra: naming ``pip install 'tdevlab[extra]'``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"strategy {strategy!r} needs {module!r}, which is not installed: "
            f"pip install 'tdevlab[{extra}]'",
            details={"strategy": strategy, "extra": extra},
        ) from exc


def seed_from(rng: np.random.Generator) -> int:
    """One draw of the run's generator that seeds an external library (a 31-bit integer,
    which every library accepts)."""
    return int(rng.integers(1, 2**31 - 1))


_LOCK, _RLOCK = type(threading.Lock()), type(threading.RLock())


def _fresh_lock(lock: Any) -> tuple[Any, tuple[()]]:
    return (threading.RLock if isinstance(lock, _RLOCK) else threading.Lock), ()


def _array(data: bytes, dtype: str, shape: tuple[int, ...], order: Literal["C", "F"]) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy(order="K")


def _reduce_array(array: np.ndarray) -> tuple[Any, ...]:
    """A plain ndarray as its bytes, dtype, shape and order: the same values, dtype (byte
    order included), shape and memory order, a writable array back. About 1 us an array
    instead of NumPy's own reduction's 3 us: an optimizer's state holds a hundred small ones."""
    if array.dtype.hasobject:
        return tuple(array.__reduce_ex__(pickle.HIGHEST_PROTOCOL))
    order: Literal["C", "F"] = (
        "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    )
    return _array, (array.tobytes(order=order), array.dtype.str, array.shape, order)


#: Locks (Optuna's genetic samplers hold one) are pickled as new, unlocked locks; plain
#: arrays by :func:`_reduce_array` (subclasses, matched by exact type, keep their own).
_DISPATCH = {
    **copyreg.dispatch_table,
    _LOCK: _fresh_lock,
    _RLOCK: _fresh_lock,
    np.ndarray: _reduce_array,
}


def dump(obj: Any) -> str:
    """``obj`` pickled, as base64 text (the snapshot's JSON keeps it as a string)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(obj)
    return base64.b64encode(buffer.getbuffer()).decode("ascii")


def load(text: str) -> Any:
    """The object :func:`dump` saved. Only ever called on text from the run's own store or
    snapshot (the engine's strategy state): never on anything a client sent."""
    return pickle.loads(base64.b64decode(text))  # noqa: S301 (our own snapshot, see above)


class Boxes:
    """The :class:`Box` of the last gene space seen (a run keeps one space)."""

    def __init__(self) -> None:
        self._space: GeneSpace | None = None
        self._box: Box | None = None

    def __call__(self, space: GeneSpace) -> Box:
        if self._box is None or self._space is not space:
            self._space, self._box = space, Box(space)
        return self._box


class Live:
    """The external optimizer behind a state, kept alive between generations.

    Unpickling every generation would cost as much as pickling; the object that produced a
    state is reused while the state handed back is that very one (compared by its text), and
    rebuilt from the text otherwise (rollback, reopen, another engine). An ask leaves the
    object changed, so it is held for the matching tell only.
    """

    def __init__(self) -> None:
        self._text: Any = None
        self._obj: Any = None
        self._asked: tuple[int, Any, Any] | None = None

    def get(self, text: Any, build: Callable[[], Any] | None = None) -> Any:
        """The object whose pickle is ``text`` (the live one, or a fresh copy).

        ``text`` may be any value that names a state exactly (see :meth:`keep`), with
        ``build`` making the object from it when the live one is not that state's.
        """
        if self._text is not None and self._text == text:
            obj = self._obj
        else:
            obj = load(text) if build is None else build()
        self._text, self._obj = None, None  # the caller changes it from here on
        return obj

    def keep(self, key: Any, obj: Any) -> None:
        """Keep ``obj`` alive for the next ask, as the state ``key`` names."""
        self._text, self._obj = key, obj

    def asked(self, obj: Any, batch: Any) -> int:
        """Hold ``obj`` and what ``ask`` proposed until ``tell``; returns the token."""
        token = next(_TOKENS)
        self._asked = (token, obj, batch)
        return token

    def for_tell(self, token: object) -> tuple[Any, Any]:
        """The object and batch of the ask with ``token``.

        Raises:
            EvolutionFailed: for a tell without its ask.
        """
        if self._asked is None or self._asked[0] != token:
            raise EvolutionFailed("tell() without the ask() of the same generation")
        _, obj, batch = self._asked
        self._asked = None
        return obj, batch

    def told(self, obj: Any) -> str:
        """Pickle ``obj`` after tell, keep it alive for the next ask, return the text."""
        text = dump(obj)
        self.keep(text, obj)
        return text


#: numpy's global random state, as ``np.random.get_state()`` returns it.
GlobalState = Any


def global_state(seed: int) -> GlobalState:
    """numpy's global random state as ``np.random.seed(seed)`` leaves it: where an adapter's
    copy of the global state starts, so a run does not depend on the user's."""
    return np.random.RandomState(seed).get_state()  # noqa: NPY002 (the global's own kind)


@contextmanager
def global_random(saved: list[GlobalState | None]) -> Iterator[None]:
    """Run a library call on the adapter's own copy of numpy's global random state.

    Some libraries draw from (or reseed) ``np.random``'s global generator (pycma when
    nevergrad drives it). Around each call the user's global state is saved, the adapter's
    (``saved[0]``, part of its pickled state) is put in, and afterwards taken back out and
    the user's restored: runs are exact and the user's global random stream is untouched.
    """
    user = np.random.get_state()  # noqa: NPY002 (the global generator is the point here)
    if saved[0] is not None:
        np.random.set_state(saved[0])  # noqa: NPY002
    try:
        yield
    finally:
        saved[0] = np.random.get_state()  # noqa: NPY002
        np.random.set_state(user)  # noqa: NPY002


class Box:
    """The gene space as a box of coordinates an external optimizer searches.

    * float genes and log-scaled integer genes: a coordinate in ``[0, 1]`` over the gene's
      search range (log genes in log space); integer ones are rounded when decoded;
    * other integer genes: a coordinate in integer units ``value - low`` within
      ``[-0.5, high - low + 0.5]``, rounded to the nearest integer (every value gets an
      interval of width one);
    * categorical genes: the choice's index the same way (an ordinal encoding).
    """

    def __init__(self, space: GeneSpace) -> None:
        self.space = space
        steps = (space.is_integer & ~space.is_log) | space.is_categorical
        #: Coordinates in integer units (the others are in [0, 1]).
        self.is_step = steps
        self.step_columns = np.flatnonzero(steps)
        self.unit_columns = np.flatnonzero(~steps)
        self.width = np.where(steps, space.high - space.low, 1.0)
        self.lower = np.where(steps, -0.5, 0.0)
        self.upper = np.where(steps, self.width + 0.5, 1.0)
        self.center = np.where(steps, self.width / 2, 0.5)
        #: Search-space units per coordinate unit.
        self.scale = np.where(steps, 1.0, space.search_span)

    def decode(self, coords: FloatArray) -> FloatArray:
        """Genes (a fresh matrix) from ``(n, genes)`` coordinates."""
        space = self.space
        coords = bounded(coords, self.lower, self.upper)
        search = space.search_low + coords * self.scale
        if self.step_columns.size:
            cols = self.step_columns
            search[:, cols] = np.clip(
                np.rint(space.low[cols] + coords[:, cols]), space.low[cols], space.high[cols]
            )
        return space.from_search(search)

    def encode(self, genes: FloatArray) -> FloatArray:
        """Coordinates of genes (for agents the optimizer did not propose: uploads)."""
        space = self.space
        search = space.to_search(genes) if space.any_log else genes.copy()
        coords = (search - space.search_low) / np.where(self.is_step, 1.0, space.search_span)
        return np.asarray(coords, dtype=np.float64)
