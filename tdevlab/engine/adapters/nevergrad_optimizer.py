"""Any Nevergrad optimizer as a strategy: ``"nevergrad:<name>"`` (``"nevergrad:NGOpt"``,
``"nevergrad:CMA"``, ``"nevergrad:DE"``, ... any name of ``ng.optimizers.registry``).

Each generation asks the optimizer for ``population_size`` candidates (``optimizer.ask()``,
as many parallel workers: ``num_workers`` is the population size) and tells each its loss
(``optimizer.tell``); the offspring replace the whole population. The parametrization is
built from the gene space: float genes (and log-scaled integer genes) are one
``ng.p.Array`` in ``[0, 1]`` over their search range (log genes in log space), other integer
genes an ``ng.p.Array`` in integer units with Nevergrad's integer casting, and each
categorical gene an ``ng.p.Choice`` of its choice indices. A space of float genes only is
the ``Array`` itself. The loss is the negated fitness; the violation of the run's limits is
Nevergrad's ``constraint_violation`` (its own penalty).

Nevergrad's optimizers choose their algorithm from the budget: ``budget`` (default 100
generations of the population size at generation 0) is given to the optimizer, and the
run may go on past it. The archive of evaluated points is pruned to ``archive_size``
points (Nevergrad's ``Pruning``), which bounds the size of the state a snapshot holds.

Determinism: the parametrization's ``random_state`` is a ``numpy.random.RandomState``
seeded by one draw ``s`` of the run's generator. Some optimizers (pycma under ``CMA``, the
metamodel of ``NGOpt``) draw from numpy's global generator: every call runs on the
adapter's own copy of the global state, which starts as ``np.random.seed(s)`` leaves it
(:func:`~tdevlab.engine.adapters._common.global_random`), so runs are the same for a seed
where Nevergrad is deterministic, and the user's global state is left alone. The
scipy-based optimizers (``SQP``, ``Powell``, ``Cobyla``...) are sequential: Nevergrad
refuses them a batch (``num_workers`` > 1), so generation 0 fails naming that; inside
``NGOpt`` they are built with ``enable_pickling()`` so their thread is not in the state.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from tdevlab.engine.adapters._common import (
    Box,
    Live,
    global_random,
    global_state,
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
from tdevlab.exceptions import EvolutionFailed, InvalidParameters, shown

__all__ = ["Nevergrad"]

#: Default budget, in generations of the population size.
BUDGET_GENERATIONS = 100


class Nevergrad:
    """A Nevergrad optimizer over the gene space, driven with ask/tell.

    The optimizer (its archive, its parametrization and their random states) is pickled
    into the strategy state as base64 text after every generation, so a snapshot restores
    it exactly. That text is unpickled only from the run's own store or snapshot, never
    from a client (a client names the optimizer and its settings, which are checked).

    Args:
        optimizer: A name in ``nevergrad.optimizers.registry`` (``"NGOpt"``, ``"CMA"``...).
        budget: The evaluations the optimizer plans for; ``None``: 100 generations.
        archive_size: The archive keeps at least this many of the best points and is
            pruned when it reaches four times as many.

    Raises:
        MissingExtra: when Nevergrad is not installed (``pip install 'tdevlab[nevergrad]'``).
        InvalidParameters: naming an unknown optimizer or a bad setting.
    """

    def __init__(
        self, optimizer: str = "NGOpt", budget: int | None = None, archive_size: int = 64
    ) -> None:
        self.name = f"nevergrad:{optimizer}"
        self._ng = require("nevergrad", "nevergrad", self.name)
        _numpy2_metamodel()
        registry = self._ng.optimizers.registry
        if not isinstance(optimizer, str) or optimizer not in registry:
            raise InvalidParameters(
                f"unknown Nevergrad optimizer {shown(optimizer)} (see "
                f"nevergrad.optimizers.registry, e.g. 'NGOpt', 'CMA', 'DE', 'OnePlusOne')",
                details={"optimizer": str(optimizer)[:64]},
            )
        for label, value, low in (("budget", budget, 1), ("archive_size", archive_size, 1)):
            if value is None and label == "budget":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 10**9:
                raise InvalidParameters(f"{label}={shown(value)} must be an integer >= {low}")
        self.optimizer = optimizer
        self.budget = budget
        self.archive_size = int(archive_size)
        self.config: dict[str, Any] = {"budget": budget, "archive_size": self.archive_size}
        self._live = Live()

    def init(self, space: GeneSpace, params: Parameters) -> StrategyState:
        """No state until generation 0 (the seed is drawn from the run's generator then)."""
        return {}

    def parametrization(self, space: GeneSpace, seed: int) -> Any:
        """The parametrization of the gene space, its random state seeded with ``seed``."""
        return parametrization(self._ng, space, seed)

    def _start(self, space: GeneSpace, n: int, seed: int) -> Any:
        ng = self._ng
        budget = self.budget if self.budget is not None else BUDGET_GENERATIONS * n
        param = self.parametrization(space, seed)
        optimizer = ng.optimizers.registry[self.optimizer](param, budget=budget, num_workers=n)
        optimizer.pruning = ng.optimizers.base.utils.Pruning(
            self.archive_size, 4 * self.archive_size
        )
        # The scipy-based optimizers run in a thread; this makes them keep their history of
        # tells instead, which they replay when unpickled (a no-op for the others).
        optimizer.enable_pickling()
        return optimizer

    def ask(
        self, rng: np.random.Generator, state: StrategyState, run: RunView
    ) -> tuple[Offspring, StrategyState]:
        """``population_size`` candidates of ``optimizer.ask()``, as genes."""
        space, n = run.space, run.params.population_size
        if "optimizer" not in state:
            seed = seed_from(rng)
            saved: list[Any] = [global_state(seed)]
            with global_random(saved):
                optimizer = self._start(space, n, seed)
        else:
            optimizer, saved = self._live.get(state["optimizer"])
        with global_random(saved):
            candidates = [optimizer.ask() for _ in range(n)]
        genes = genes_of(space, [c.value for c in candidates])
        token = self._live.asked((optimizer, saved), (candidates, genes))
        return Offspring(genes), {**state, "asked": token}

    def tell(
        self,
        rng: np.random.Generator,
        state: StrategyState,
        run: RunView,
        offspring: Offspring,
        scored: Scored,
    ) -> tuple[IntArray, StrategyState]:
        """``optimizer.tell`` each candidate its loss and violation; offspring replace all."""
        (optimizer, saved), (candidates, asked) = self._live.for_tell(state.get("asked"))
        uploaded = (asked != offspring.genes).any(axis=1)
        loss = (-scored.fitness).tolist()
        violation = scored.violation.tolist()
        with global_random(saved):
            for row, candidate in enumerate(candidates):
                if uploaded[row]:  # an uploaded agent: told as a point not asked for
                    value = values_of(run.space, offspring.genes[row])
                    candidate = optimizer.parametrization.spawn_child(new_value=value)
                optimizer.tell(candidate, loss[row], constraint_violation=[violation[row]])
        try:
            text = self._live.told((optimizer, saved))
        except (TypeError, AttributeError) as exc:  # e.g. a thread inside the optimizer
            raise EvolutionFailed(
                f"strategy {self.name!r}: the optimizer cannot be saved in a snapshot ({exc})"
            ) from exc
        n = 0 if run.population is None else len(run.population)
        keep = np.arange(n, n + len(offspring), dtype=np.int64)
        return keep, {"optimizer": text, "told": int(optimizer.num_tell)}


def parametrization(ng: Any, space: GeneSpace, seed: int) -> Any:
    """The gene space as a Nevergrad parametrization (see the module docstring)."""
    box = Box(space)
    numeric = np.flatnonzero(~space.is_categorical)
    steps = np.intersect1d(box.step_columns, numeric)
    parts: dict[str, Any] = {}
    if box.unit_columns.size:
        parts["unit"] = ng.p.Array(shape=(box.unit_columns.size,), lower=0.0, upper=1.0)
    if steps.size:
        parts["steps"] = ng.p.Array(
            shape=(steps.size,), lower=box.lower[steps], upper=box.upper[steps]
        ).set_integer_casting()
    for column in space.categorical_columns:
        parts[f"choice{column}"] = ng.p.Choice(list(range(int(space.n_choices[column]))))
    param = parts["unit"] if list(parts) == ["unit"] else ng.p.Dict(**parts)
    param.random_state = np.random.RandomState(seed)  # noqa: NPY002 (Nevergrad's interface)
    return param


def genes_of(space: GeneSpace, values: list[Any]) -> FloatArray:
    """Candidates' values as a genes matrix."""
    box = Box(space)
    coords = np.zeros((len(values), len(space)), dtype=np.float64)
    if values and not isinstance(values[0], dict):
        coords[:] = np.asarray(values, dtype=np.float64)
        return box.decode(coords)
    numeric = np.flatnonzero(~space.is_categorical)
    steps = np.intersect1d(box.step_columns, numeric)
    for i, value in enumerate(values):
        if box.unit_columns.size:
            coords[i, box.unit_columns] = value["unit"]
        if steps.size:
            coords[i, steps] = value["steps"]
        for column in space.categorical_columns:
            coords[i, column] = value[f"choice{column}"]
    return box.decode(coords)


def values_of(space: GeneSpace, genes: FloatArray) -> Any:
    """One genome as a value of :func:`parametrization` (for uploaded agents)."""
    box = Box(space)
    coords = box.encode(genes[None, :])[0]
    unit = np.clip(coords[box.unit_columns], 0.0, 1.0)
    if box.unit_columns.size == len(space):
        return unit
    steps = np.intersect1d(box.step_columns, np.flatnonzero(~space.is_categorical))
    value: dict[str, Any] = {}
    if box.unit_columns.size:
        value["unit"] = unit
    if steps.size:
        value["steps"] = coords[steps]
    for column in space.categorical_columns:
        value[f"choice{column}"] = int(genes[column])
    return value


def _scalar(value: Any) -> float:
    """``float`` as NumPy 1 had it: a one-element array converts to its element."""
    if isinstance(value, np.ndarray):
        return float(value.reshape(-1)[0]) if value.size == 1 else float(value)
    return float(value)


def _numpy2_metamodel() -> None:
    """Make Nevergrad 1.0's metamodel run on NumPy >= 2.3.

    Its surrogate loss is ``float(model.predict(x))`` of a one-element array, which NumPy
    2.3 refuses; the error strands the scipy thread the metamodel drives and the process
    cannot exit. ``NGOpt`` picks the metamodel for small continuous spaces. Its module gets
    a ``float`` that converts a one-element array as NumPy 1 did (nothing else changes).
    """
    metamodel = importlib.import_module("nevergrad.optimization.metamodel")
    if "float" not in vars(metamodel):
        setattr(metamodel, "float", _scalar)  # noqa: B010 (a module global it lacks)


def _nevergrad(optimizer: str, **config: Any) -> Nevergrad:
    return Nevergrad(optimizer, **config)


register_strategy("nevergrad:", _nevergrad)
