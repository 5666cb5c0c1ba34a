"""CMA-ES by pycma (``cma.CMAEvolutionStrategy``) as a strategy: ``"cmaes"``.

Each generation is one ``es.ask()`` of ``population_size`` solutions and one ``es.tell``;
the offspring replace the whole population. The gene space is the box of
:class:`~tdevlab.engine.adapters._common.Box`: float genes in ``[0, 1]`` (log genes in log
space), integer and categorical genes in integer units, declared to pycma as
``integer_variables`` (its own handling: a floor on their step size and rounding in
``ask``); the box is pycma's ``bounds``, except when no gene is in integer units and there
are no extra options: then the adapter maps each batch into the box itself
(:class:`BoxMap`: pycma's own transform, a whole batch at once). pycma minimises, so it is
told the negated feasibility-first score of the batch: feasible agents by fitness,
infeasible ones after them by smaller violation under the run's limits (only the order
matters to CMA-ES).

Determinism: pycma draws its normal samples through the ``randn`` option: it gets
:class:`Normals`, the ``randn`` of a private ``numpy.random.RandomState`` seeded by one draw
``s`` of the run's generator, drawn ahead in blocks (pickled with it as where its block
began and how far it is used: numpy's own pickle of a ``RandomState`` costs a tenth of a
millisecond a generation). Its integer handling (``integer_centering``), its mirrored
sampling (on by default below 6 solutions) and some options draw from numpy's global
generator: then every call runs on the adapter's own copy of the global state, which starts
as ``np.random.seed(s)`` leaves it (:func:`~tdevlab.engine.adapters._common.global_random`),
so a seed gives the same run and the user's global random state is left alone. Over float
genes with 6 solutions or more and no extra options pycma reads nothing global, and the
save and restore (a tenth of a millisecond a call) are skipped; that run is pycma's own
``{"seed": s}`` run: ``seed`` seeds the global generator, whose ``randn`` then draws the
same numbers.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from tdevlab.engine.adapters._common import (
    Box,
    Boxes,
    Live,
    dump,
    global_random,
    global_state,
    load,
    require,
    seed_from,
)
from tdevlab.engine.genes import FloatArray, GeneSpace
from tdevlab.engine.operators import IntArray
from tdevlab.engine.params import Parameters
from tdevlab.engine.strategy import (
    Offspring,
    RunView,
    Scored,
    StrategyState,
    register_strategy,
)
from tdevlab.exceptions import InvalidParameters, shown

__all__ = ["CMAES", "Normals", "cma_settings"]

#: pycma mirrors samples (drawing from the global generator) below this many by default.
MIRRORED_BELOW = 6
#: The optimizer is pickled every this many generations; the state of the ones between
#: is that pickle and the arguments of each tell since (``told``), replayed on restore.
PICKLE_EVERY = 16
#: pycma options the adapter sets itself (from the run and the gene space).
OWN_OPTIONS = frozenset(
    {"popsize", "bounds", "randn", "seed", "integer_variables", "CMA_stds", "verbose"}
)


class CMAES:
    """CMA-ES over the gene space, by pycma.

    Its whole state (the ``CMAEvolutionStrategy`` and its random generator) is pickled
    into the strategy state as base64 text every :data:`PICKLE_EVERY` generations, and the
    generations between hold that text and the arguments of each ``tell`` since (``told``:
    the values told, how many solutions were asked, and the solutions themselves only where
    uploaded agents replaced some); restored, the pickle is loaded and those asks and tells
    replayed, which gives the same optimizer bit for bit on the same kind of machine with
    the same pycma and NumPy (pycma's ask and tell are deterministic given its state and
    normals; another CPU's math may differ in the last bit). A generation pickles about 12
    bytes an agent (under a kilobyte at population 64) instead of the ~35 KB of the whole
    optimizer. That text is unpickled only from the run's own store or snapshot, never
    from a client (a client names the strategy and its settings, which are checked).

    Args:
        sigma0: The initial step size, as a fraction of each gene's range (integer and
            categorical genes: of their number of values).
        options: More pycma options (``cma.CMAOptions``), e.g. ``{"CMA_diagonal": True}``;
            those the adapter sets (``popsize``, ``bounds``, ``randn``, ``seed``,
            ``integer_variables``, ``CMA_stds``, ``verbose``) are refused.

    Raises:
        MissingExtra: when pycma is not installed (``pip install 'tdevlab[cma]'``).
        InvalidParameters: naming a bad ``sigma0`` or an unknown or reserved option.
    """

    name = "cmaes"

    def __init__(self, sigma0: float = 0.3, options: Mapping[str, Any] | None = None) -> None:
        self._cma = require("cma", "cma", self.name)
        if isinstance(sigma0, bool) or not isinstance(sigma0, int | float) or not 0 < sigma0 <= 10:
            raise InvalidParameters(f"sigma0={shown(sigma0)} must be a number within (0, 10]")
        options = dict(options or {})
        known = set(self._cma.CMAOptions())
        unknown = sorted(str(k) for k in options if k not in known)
        if unknown:
            raise InvalidParameters(f"unknown pycma option(s) {unknown}")
        reserved = sorted(str(k) for k in options if k in OWN_OPTIONS)
        if reserved:
            raise InvalidParameters(f"pycma option(s) {reserved} are set from the run")
        self.sigma0 = float(sigma0)
        self.options = options
        self.config: dict[str, Any] = {"sigma0": self.sigma0, "options": dict(options)}
        self._live = Live()
        self._box = Boxes()
        self._maps: tuple[Box, BoxMap] | None = None

    def init(self, space: GeneSpace, params: Parameters) -> StrategyState:
        """No state until generation 0 (the seed is drawn from the run's generator then)."""
        return {}

    def ask(
        self, rng: np.random.Generator, state: StrategyState, run: RunView
    ) -> tuple[Offspring, StrategyState]:
        """``population_size`` solutions of ``es.ask()``, decoded to genes."""
        box = self._box(run.space)
        n = run.params.population_size
        if "es" not in state:
            seed = seed_from(rng)
            saved: list[Any] = [global_state(seed)]
            es = self._start(box, n, seed, saved)
        else:
            key = (state["es"], tuple(state.get("told", ())))
            es, saved = self._live.get(key, lambda: self._replay(box, state))
        asked = self._ask(box, es, saved, n)
        box_map = self._map(box, es)
        coords = asked if box_map is None else box_map.forward(asked)
        genes = box.decode(coords)
        token = self._live.asked((es, saved), (asked, coords, genes))
        return Offspring(genes), {**state, "asked": token}

    def _ask(self, box: Box, es: Any, saved: list[Any], n: int) -> FloatArray:
        with self._global(box, min(n, es.popsize), saved):
            return np.asarray(es.ask(number=None if n == es.popsize else n), dtype=np.float64)

    def _tell(
        self,
        box: Box,
        es: Any,
        saved: list[Any],
        told: FloatArray,
        values: list[float],
        uploads: bool,
    ) -> None:
        with self._global(box, min(len(told), es.popsize), saved), warnings.catch_warnings():
            if uploads:
                # An uploaded agent replaced an asked solution, whose unrounded copy pycma
                # then reports as never told: expected here.
                warnings.filterwarnings(
                    "ignore", message=r"\s*tell: .* round int archive", module="cma"
                )
            # One matrix, not a list of row views: pycma keeps its last tell's arguments
            # (``_tell2_args``), and one array pickles in a microsecond, 64 rows in 200.
            es.tell(told, values)

    def _replay(self, box: Box, state: StrategyState) -> tuple[Any, list[Any]]:
        """The optimizer of ``state``: the pickled one, then each tell since, replayed (ask
        and tell are deterministic given pycma's state, its normals included)."""
        es, saved = load(state["es"])
        for entry in state.get("told", ()):
            told, values, n, uploads = _told(entry)
            asked = self._ask(box, es, saved, n)
            self._tell(box, es, saved, asked if told is None else told, values, uploads)
        return es, saved

    def _start(self, box: Box, n: int, seed: int, saved: list[Any]) -> Any:
        bounds = bool(box.step_columns.size or self.options)
        options = {**cma_settings(box, n, seed, bounds=bounds), **self.options}
        with global_random(saved):
            return self._cma.CMAEvolutionStrategy(box.center, self.sigma0, options)

    def _map(self, box: Box, es: Any) -> BoxMap | None:
        """The box map to apply to ``es``'s solutions, ``None`` when pycma applies its own
        (an optimizer started with ``bounds``: integer genes, extra options, older runs)."""
        if es.boundary_handler.has_bounds():
            return None
        if self._maps is None or self._maps[0] is not box:
            self._maps = (box, BoxMap(self._cma, box))
        return self._maps[1]

    def _global(self, box: Box, n: int, saved: list[Any]) -> AbstractContextManager[None]:
        """The global random state guard, where pycma reads the global generator."""
        if box.step_columns.size or n < MIRRORED_BELOW or self.options:
            return global_random(saved)
        return nullcontext()

    def tell(
        self,
        rng: np.random.Generator,
        state: StrategyState,
        run: RunView,
        offspring: Offspring,
        scored: Scored,
    ) -> tuple[IntArray, StrategyState]:
        """``es.tell`` with the negated feasibility-first scores; the offspring replace all."""
        (es, saved), (asked, coords, genes) = self._live.for_tell(state.get("asked"))
        box = self._box(run.space)
        told = _with_uploads(box, self._map(box, es), asked, genes, offspring.genes)
        negated = -scored.score
        values = negated.tolist()
        uploads = told is not asked
        # Recorded before the tell, as pycma is given them (it may keep and change arrays);
        # the solutions only where uploads changed them (a replayed ask gives the rest).
        entry = dump((told, values, len(asked), uploads)) if uploads else _values(negated)
        entries = [*state.get("told", ()), entry]
        self._tell(box, es, saved, told, values, uploads)
        if "es" not in state or len(entries) >= PICKLE_EVERY:
            out = {"es": dump((es, saved)), "told": []}
        else:
            out = {"es": state["es"], "told": entries}
        # The next ask finds this very optimizer by the state's text (see ``ask``).
        self._live.keep((out["es"], tuple(out["told"])), (es, saved))
        n = 0 if run.population is None else len(run.population)
        keep = np.arange(n, n + len(offspring), dtype=np.int64)
        return keep, {**out, "sigma": float(es.sigma)}


class Normals:
    """``numpy.random.RandomState(seed).randn``, the same numbers, with a cheap pickle.

    Normals are drawn ahead in blocks; the pickle holds the generator's state where the
    block began (read once a block: numpy's MT19937 state getter costs 40 us, and its own
    ``RandomState`` pickle 100 us), the block's length and how much of it is used. Unpickled,
    the block is drawn again from that state: the same numbers follow, and the generator
    ends where the original's is. Consecutive calls give what one call for all would
    (``randn(a)`` then ``randn(b)`` is ``randn(a + b)`` split).
    """

    #: A block holds this many of the first call's draws (pycma asks one size each time).
    CALLS_PER_BLOCK = 16

    def __init__(self, seed: int | None) -> None:
        self._random = np.random.RandomState(seed)  # noqa: NPY002 (pycma's randn interface)
        self._origin: Any = None
        self._block = np.empty(0)
        self._used = 0
        self._block_size = 0

    @classmethod
    def _at(cls, origin: Any, drawn: int, used: int, block_size: int) -> Normals:
        normals = cls(None)
        normals._random.set_state(origin)
        normals._origin, normals._used, normals._block_size = origin, used, block_size
        normals._block = normals._random.standard_normal(drawn)
        return normals

    def __reduce__(self) -> tuple[Any, ...]:
        # Before the first block the generator's own state is where the next one begins.
        origin = self._random.get_state() if self._origin is None else self._origin
        return Normals._at, (origin, self._block.size, self._used, self._block_size)

    def __call__(self, *shape: int) -> Any:
        n = int(np.prod(shape)) if shape else 1
        if not self._block_size:
            self._block_size = max(n, 1) * self.CALLS_PER_BLOCK
        used, block = self._used, self._block
        if used + n <= block.size:
            self._used = used + n
            out = block[used : used + n]
        else:  # the rest of this block, then a new one that starts where it ends
            origin = self._random.get_state()
            fresh = self._random.standard_normal(max(self._block_size, n - (block.size - used)))
            take = n - (block.size - used)
            out = np.concatenate([block[used:], fresh[:take]])
            self._origin, self._block, self._used = origin, fresh, take
        return out.reshape(shape) if shape else float(out[0])


def cma_settings(
    box: Box, population_size: int, seed: int, *, bounds: bool = True
) -> dict[str, Any]:
    """The pycma options the adapter runs with (a plain pycma loop uses the same ones, with
    ``{"seed": seed}`` in place of ``randn``: both draw the same numbers). Without
    ``bounds`` the box is left to a :class:`BoxMap`, applied to the whole batch."""
    options: dict[str, Any] = {
        "popsize": population_size,
        "randn": Normals(seed),
        "verbose": -9,
    }
    if bounds:
        options["bounds"] = [box.lower.tolist(), box.upper.tolist()]
    if box.step_columns.size:  # the step size of integer coordinates in their own units
        options["integer_variables"] = box.step_columns.tolist()
        options["CMA_stds"] = np.where(box.is_step, box.width + 1, 1.0).tolist()
    return options


def _with_uploads(
    box: Box, box_map: BoxMap | None, asked: FloatArray, proposed: FloatArray, genes: FloatArray
) -> Any:
    """The solutions ``es.ask`` gave (``asked``), with the rows of uploaded agents (``genes``
    not the ``proposed`` ones) replaced by their coordinates, mapped back through the box
    map where there is one (as pycma's own ``tell`` maps an unknown solution back)."""
    if genes is proposed:  # the very matrix ask proposed: the engine wrote no upload into it
        return asked
    changed = np.flatnonzero((proposed != genes).any(axis=1))
    if changed.size:
        asked = asked.copy()
        coords = box.encode(genes[changed])
        asked[changed] = coords if box_map is None else box_map.inverse(coords)
    return asked


class BoxMap:
    """pycma's own box handling (``BoundTransform``: the identity inside the box's margins,
    quadratic near and mirrored beyond each bound) applied to a whole batch at once.

    pycma applies it one solution at a time in ``ask`` (about 25 us each: 1.5 ms of a
    generation at population 64, a third of the optimizer's time) and looks each back up in
    ``tell``. The adapter starts pycma without ``bounds`` over float genes, maps the batch
    here with the same operations on the same constants (read from pycma's own transform),
    and tells pycma the unmapped solutions: the same numbers bit for bit, as pycma's own
    bounded loop (tested).
    """

    def __init__(self, cma: Any, box: Box) -> None:
        self._bounds = cma.boundary_handler.BoundTransform([box.lower.tolist(), box.upper.tolist()])
        transform = self._bounds.bounds_tf
        transform.initialize(box.lower.size)
        self._lb, self._ub = transform._lb, transform._ub
        self._al, self._au = transform._al, transform._au

    def forward(self, solutions: FloatArray) -> FloatArray:
        """The solutions mapped into the box (``BoxConstraintsLinQuadTransformation`` row by
        row, step for step: the same float operations in the same order)."""
        y = np.array(solutions, dtype=np.float64)
        lb, ub, al, au = (
            np.broadcast_to(a, y.shape) for a in (self._lb, self._ub, self._al, self._au)
        )
        idx = (y < lb - 2 * al - (ub - lb) / 2.0) | (y > ub + 2 * au + (ub - lb) / 2.0)
        if idx.any():  # far outside: shifted by whole periods
            r = 2 * (ub[idx] - lb[idx] + al[idx] + au[idx])
            s = lb[idx] - 2 * al[idx] - (ub[idx] - lb[idx]) / 2.0
            y[idx] -= r * ((y[idx] - s) // r)
        idx = y > ub + au
        if idx.any():  # mirrored at the upper margin
            y[idx] -= 2 * (y[idx] - ub[idx] - au[idx])
        idx = y < lb - al
        if idx.any():
            y[idx] += 2 * (lb[idx] - al[idx] - y[idx])
        idx = y < lb + al
        if idx.any():  # quadratic within the margins
            y[idx] = lb[idx] + (y[idx] - (lb[idx] - al[idx])) ** 2 / 4 / al[idx]
        idx = y > ub - au
        if idx.any():
            y[idx] = ub[idx] - (y[idx] - (ub[idx] + au[idx])) ** 2 / 4 / au[idx]
        return y

    def inverse(self, coords: FloatArray) -> FloatArray:
        """Solutions that map to ``coords`` (pycma's ``BoundTransform.inverse``, per row)."""
        return np.array([self._bounds.inverse(row) for row in coords], dtype=np.float64)


#: The prefix of a tell record that holds only the values (no upload changed a solution).
_VALUES = "f8:"


def _values(values: FloatArray) -> str:
    """A tell's values as text: their float64 bytes in base64 (exact, and ~1 us against
    ~10 us for a pickle of the list)."""
    return _VALUES + base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode(
        "ascii"
    )


def _told(entry: str) -> tuple[FloatArray | None, list[float], int, bool]:
    """``(solutions or None, values, how many were asked, uploads)`` of a tell record."""
    if entry.startswith(_VALUES):
        values = np.frombuffer(base64.b64decode(entry[len(_VALUES) :]), dtype="<f8").tolist()
        return None, values, len(values), False
    told, values, n, uploads = load(entry)  # pickled: a tell with uploads (or older runs)
    return told, values, n, uploads


register_strategy("cmaes", CMAES)
