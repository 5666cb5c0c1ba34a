"""The Strategy seam: what makes the next generation, as ask/tell over explicit state.

The engine owns the run: the loop, control, evaluation (and its executor), uploaded
agents, ids, events, alerts, the store and rollback. A strategy owns only "which genomes
next". Each generation the engine calls:

1. ``ask(rng, state, run) -> (offspring, state)``: propose new genomes. ``run`` is a
   read-only :class:`RunView` of the current population (``None`` before generation 0),
   its feasibility-first ``score`` (higher is better) and the parameters in force.
2. The engine evaluates the offspring (uploaded agents take the place of the weakest).
3. ``tell(rng, state, run, offspring, scored) -> (keep, state)``: choose the next
   population from the *candidates*: the current population's rows ``0..n-1`` followed by
   the offspring's rows ``n..n+k-1``. ``keep`` lists candidate rows, in order.

All randomness comes from ``rng``, the run's ``numpy.random.Generator``. ``state`` is
plain JSON data (numbers, strings, lists, dicts; arrays as lists, bytes as base64), never
modified in place: a snapshot stores it with each generation, so a rollback restores the
strategy exactly and continuing reproduces the original generations bit for bit.

An example, a hill climber that restarts from a random population when it stalls::

    import numpy as np

    from tdevlab.engine.operators import mutate
    from tdevlab.engine.strategy import Offspring


    class HillClimber:
        '''Mutants of the best agent; a new random population after `patience` stalls.'''

        name = "hill-climber"

        def __init__(self, patience=5):
            self.patience = patience
            self.config = {"patience": patience}

        def init(self, space, params):
            return {"best": None, "stalled": 0}

        def ask(self, rng, state, run):
            n, p = run.params.population_size, run.params
            if run.population is None or state["stalled"] >= self.patience:
                return Offspring(run.space.random(rng, n)), {"best": None, "stalled": 0}
            parents = np.full(n, int(np.argmax(run.score)))
            genes, mutation = mutate(rng, run.population.genes[parents],
                                     p.mutation_rate, p.mutation_sigma, run.space)
            return Offspring(genes, parent_a=parents, mutation=mutation), state

        def tell(self, rng, state, run, offspring, scored):
            n = 0 if run.population is None else len(run.population)
            keep = n + np.arange(len(offspring))  # the offspring replace everyone
            best = float(scored.fitness.max())
            if state["best"] is None or best > state["best"]:
                return keep, {"best": best, "stalled": 0}
            return keep, {**state, "stalled": state["stalled"] + 1}

The test suite runs this very example through the engine, the server and the client
(``tests/engine/test_strategy.py``). Built-in strategies are made by name with
:func:`make_strategy`; the default is :class:`~tdevlab.engine.ga.GeneticAlgorithm`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

import msgspec
import numpy as np

from tdevlab.engine.genes import FloatArray, GeneSpace
from tdevlab.engine.operators import BoolArray, IntArray, Mutation
from tdevlab.engine.params import Parameters
from tdevlab.engine.population import Population
from tdevlab.exceptions import EvolutionFailed, InvalidParameters, MissingExtra, shown

__all__ = [
    "Offspring",
    "RunView",
    "Scored",
    "Strategy",
    "StrategyState",
    "describe",
    "is_strategy_name",
    "make_strategy",
    "register_strategy",
    "strategy_from_spec",
    "strategy_names",
]

#: A strategy's whole state: JSON data (the snapshot stores it as JSON).
StrategyState: TypeAlias = dict[str, Any]


@dataclass(frozen=True)
class RunView:
    """What a strategy sees of the run; read-only (never modify its arrays).

    Attributes:
        space: The gene space.
        params: The parameters in force for the generation being made.
        generation: The generation being made (0: the initial population).
        population: The current population, ``None`` before generation 0.
        score: One number per population row whose order is the feasibility-first order
            (higher is better: feasible by fitness, then smaller violation), under the
            limits in ``params``; ``None`` before generation 0.
    """

    space: GeneSpace
    params: Parameters
    generation: int
    population: Population | None
    score: FloatArray | None


@dataclass(frozen=True)
class Offspring:
    """New genomes a strategy proposes.

    Attributes:
        genes: ``(k, len(space))`` genomes inside the gene space (see ``GeneSpace``).
        parent_a: Per genome, the population row of its first parent (-1: none).
        parent_b: Per genome, the row of its second parent (-1: none).
        crossed: Per genome, whether crossover made it (counted as ``crossovers``).
        mutation: The mutated cells (``rows`` index ``genes``), for mutation counts and
            logs.
        carried: Optional, with ``block``: population rows the strategy means to keep.
        block: Optional: the matrix ``[population.genes[carried]; genes]`` when the
            strategy built it in one piece (the GA's crossover does). When ``tell`` keeps
            exactly ``carried`` and then every offspring, the engine takes it as the new
            population's genes instead of copying them together.
    """

    genes: FloatArray
    parent_a: IntArray | None = None
    parent_b: IntArray | None = None
    crossed: BoolArray | None = None
    mutation: Mutation | None = None
    carried: IntArray | None = None
    block: FloatArray | None = None

    def __len__(self) -> int:
        return int(self.genes.shape[0])


@dataclass(frozen=True)
class Scored:
    """The offspring's evaluation, as ``tell`` gets it (after uploads took their places).

    ``score`` is the feasibility-first score of the offspring among themselves.
    """

    fitness: FloatArray
    memory_kb: FloatArray
    speed_us: FloatArray
    violation: FloatArray
    score: FloatArray


@runtime_checkable
class Strategy(Protocol):
    """What makes the next generation (see the module docstring for the protocol).

    ``name`` identifies the strategy in stored runs; ``config`` (optional) holds the
    arguments that rebuild a built-in strategy with :func:`make_strategy`.
    """

    name: str

    def init(self, space: GeneSpace, params: Parameters) -> StrategyState:
        """Return the state before generation 0."""
        ...

    def ask(
        self, rng: np.random.Generator, state: StrategyState, run: RunView
    ) -> tuple[Offspring, StrategyState]:
        """Propose the next genomes."""
        ...

    def tell(
        self,
        rng: np.random.Generator,
        state: StrategyState,
        run: RunView,
        offspring: Offspring,
        scored: Scored,
    ) -> tuple[IntArray, StrategyState]:
        """Choose the candidate rows that make the next population."""
        ...


_REGISTRY: dict[str, Callable[..., Strategy]] = {}
#: Families named by a prefix ("nevergrad:"): the rest of the name is the first argument.
_FAMILIES: dict[str, Callable[..., Strategy]] = {}


def register_strategy(name: str, factory: Callable[..., Strategy]) -> None:
    """Make ``make_strategy(name, **config)`` build a strategy with ``factory(**config)``.

    A name ending in ``":"`` registers a family: ``make_strategy("nevergrad:NGOpt", config)``
    calls ``factory("NGOpt", **config)``.
    """
    if name.endswith(":"):
        _FAMILIES[name] = factory
    else:
        _REGISTRY[name] = factory


def strategy_names() -> list[str]:
    """The names :func:`make_strategy` knows (a family as ``"prefix:<name>"``)."""
    return sorted(_REGISTRY) + [f"{prefix}<name>" for prefix in sorted(_FAMILIES)]


def is_strategy_name(name: str) -> bool:
    """Whether ``name`` is a registered name or of a registered family's form."""
    prefix, colon, rest = name.partition(":")
    return name in _REGISTRY or bool(colon and rest and f"{prefix}:" in _FAMILIES)


def make_strategy(name: str, config: Mapping[str, Any] | None = None) -> Strategy:
    """Build a registered strategy.

    Raises:
        InvalidParameters: for an unknown name (naming the known ones) or bad arguments.
        MissingExtra: for an adapter whose library is not installed (naming the extra).
    """
    factory = _REGISTRY.get(name) if isinstance(name, str) else None
    arguments: tuple[str, ...] = ()
    if factory is None and isinstance(name, str) and is_strategy_name(name):
        prefix, _, rest = name.partition(":")
        factory, arguments = _FAMILIES[f"{prefix}:"], (rest,)
    if factory is None:
        raise InvalidParameters(
            f"unknown strategy {shown(name, 64)}; strategies are {strategy_names()}",
            details={"strategy": str(name)[:64]},
        )
    try:
        return factory(*arguments, **dict(config or {}))
    except MissingExtra:
        raise  # its message is the whole story (which pip install to run)
    except (TypeError, ValueError, OverflowError) as exc:  # a setting of the wrong kind
        raise InvalidParameters(f"strategy {name!r}: {str(exc)[:200]}") from exc


def strategy_from_spec(spec: object) -> Strategy:
    """A built-in strategy from a client's spec: ``"nsga2"`` or ``{"name": "nsga2", ...}``.

    Raises:
        InvalidParameters: for another shape, or an unknown name or setting (named).
    """
    if isinstance(spec, str):
        return make_strategy(spec)
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        config = {k: v for k, v in spec.items() if k != "name"}
        return make_strategy(spec["name"], config)
    raise InvalidParameters(
        f"strategy must be a name or {{'name': ..., settings}}, got {str(spec)[:64]!r}",
        details={"parameter": "strategy"},
    )


def describe(strategy: Strategy) -> dict[str, Any]:
    """``{"name": ..., "config": {...}}``: what a run records and an ack reports."""
    return {"name": strategy.name, "config": dict(getattr(strategy, "config", {}) or {})}


def check_keep(keep: object, candidates: int) -> IntArray:
    """Validate what ``tell`` returned: distinct candidate rows, at least one.

    Raises:
        EvolutionFailed: naming what is wrong (a strategy bug fails the run cleanly).
    """
    rows = np.asarray(keep)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise EvolutionFailed(f"tell() must return a 1-D integer array of rows, got {rows!r}")
    if rows.size < 1:
        raise EvolutionFailed("tell() kept no agent; a population needs at least one")
    # Rows in increasing order (the GA's with one elite: it, then every child) are distinct
    # without counting, and their ends are their extremes.
    increasing = rows.size == 1 or bool((rows[1:] > rows[:-1]).all())
    low, high = (rows[0], rows[-1]) if increasing else (rows.min(), rows.max())
    if low < 0 or high >= candidates:
        raise EvolutionFailed(f"tell() returned rows outside 0..{candidates - 1}")
    if not increasing and np.bincount(rows, minlength=candidates).max() > 1:
        raise EvolutionFailed("tell() returned a row more than once")
    return rows.astype(np.int64, copy=False)


#: Integers JSON keeps as they are (msgspec's range: int64 and uint64).
_INT_RANGE = (-(2**63), 2**64)


def as_stored(state: Any) -> Any:
    """``state`` as a JSON round trip gives it back (what stores keep and a restore
    returns): tuples become lists, NaN and infinities ``None``, integer keys text, and
    anything JSON cannot hold is refused.

    ASCII text, plain numbers, booleans and ``None`` are passed through as they are (a round
    trip gives them back unchanged): a pickled optimizer's state is ~40 KB of base64 text,
    which a round trip would copy at ~3 us a kilobyte every generation. The rest goes
    through msgspec's own round trip, so the result is always that round trip's.

    Raises:
        TypeError, ValueError: as ``msgspec.json.encode`` does, for what JSON cannot hold.
    """
    kind = type(state)
    if kind is str:
        return state if state.isascii() else _round_trip(state)
    if kind is float:
        return state if math.isfinite(state) else None
    if kind is int:
        return state if _INT_RANGE[0] <= state < _INT_RANGE[1] else _round_trip(state)
    if state is None or kind is bool:
        return state
    if kind is dict and all(type(k) is str and k.isascii() for k in state):
        return {k: _stored(v) for k, v in state.items()}
    if kind is list or kind is tuple:
        return [_stored(v) for v in state]
    return _round_trip(state)


def _stored(value: Any) -> Any:
    """:func:`as_stored` of a nested value; nesting too deep for this recursion (msgspec's
    own goes further) takes the round trip itself."""
    try:
        return as_stored(value)
    except RecursionError:
        return _round_trip(value)


def _round_trip(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))
