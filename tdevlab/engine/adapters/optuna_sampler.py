"""Any Optuna sampler as a strategy: ``"optuna-tpe"``, ``"optuna-cmaes"``, ``"optuna-nsga2"``
(and ``"optuna-random"``, ``"optuna-qmc"``, ``"optuna-gp"``).

Each generation asks an in-memory study for ``population_size`` trials (``study.ask``,
every one before any is told, as parallel workers would), and tells them all after the
engine evaluated them (``study.tell``); the offspring replace the whole population. Each
gene is one Optuna distribution: ``FloatDistribution(low, high, log=...)``,
``IntDistribution(low, high, log=...)`` or ``CategoricalDistribution(choices)``.

Constraints: samplers that handle constraints (TPE, NSGA-II, GP) are told the fitness, and
the violation of the run's limits as the trial's constraint (``trial.set_constraint`` in
Optuna 5, a ``constraints_func`` before), so they handle feasibility their own way. The
others (CMA-ES, random, QMC) are told the batch's feasibility-first score: the fitness
when every trial is feasible, otherwise ranks (feasible by fitness, then smaller
violation); the CMA-ES sampler's generation is the batch (``popsize`` =
``population_size``), so it only compares values within it.

Determinism: the sampler is seeded by one draw of the run's generator (``seed=``), which
makes TPE, NSGA-II, random and CMA-ES runs the same for the same seed, as in Optuna itself.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from tdevlab.engine.adapters._common import Live, global_random, global_state, require, seed_from
from tdevlab.engine.genes import Categorical, FloatArray, Gene, GeneSpace, Integer
from tdevlab.engine.operators import IntArray
from tdevlab.engine.params import Parameters
from tdevlab.engine.strategy import (
    Offspring,
    RunView,
    Scored,
    StrategyState,
    register_strategy,
)
from tdevlab.exceptions import InvalidParameters, MissingExtra, shown

__all__ = ["SAMPLERS", "OptunaSampler", "distributions", "violation_of"]

#: Sampler names and their Optuna classes.
SAMPLERS = {
    "tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
    "nsga2": "NSGAIISampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
}
#: Sampler arguments the adapter sets itself.
OWN_OPTIONS = frozenset({"seed", "constraints_func"})
#: The trial attribute that carries the violation of the run's limits.
VIOLATION = "violation"


def violation_of(trial: Any) -> tuple[float]:
    """The constraint a sampler's ``constraints_func`` reads (a module-level function, so
    the sampler pickles)."""
    return (float(trial.user_attrs.get(VIOLATION, 0.0)),)


class OptunaSampler:
    """An Optuna sampler driving the run through ``study.ask()`` / ``study.tell()``.

    The whole study (its in-memory storage of every trial, and the sampler with its random
    state) is pickled into the strategy state as base64 text after every generation, so a
    snapshot restores it exactly. That text is unpickled only from the run's own store or
    snapshot, never from a client (a client names the sampler and its settings).

    Args:
        sampler: One of :data:`SAMPLERS` (``"tpe"``, ``"cmaes"``, ``"nsga2"``, ...).
        options: Keyword arguments of the sampler's class (JSON values), e.g.
            ``{"n_startup_trials": 20}``; ``seed`` and ``constraints_func`` are set by the
            adapter. NSGA-II's ``population_size`` and CMA-ES's ``popsize`` default to the
            run's ``population_size``.

    Raises:
        MissingExtra: when Optuna (or what the sampler needs) is not installed.
        InvalidParameters: naming an unknown sampler or a bad option.
    """

    def __init__(self, sampler: str = "tpe", options: Mapping[str, Any] | None = None) -> None:
        if sampler not in SAMPLERS:
            raise InvalidParameters(
                f"unknown Optuna sampler {shown(sampler)}; samplers are {sorted(SAMPLERS)}",
                details={"sampler": str(sampler)[:64]},
            )
        self.name = f"optuna-{sampler}"
        self._optuna = require("optuna", "optuna", self.name)
        if sampler == "cmaes":
            require("cmaes", "optuna", self.name)  # Optuna's CMA-ES sampler runs on it
        self.sampler = sampler
        options = dict(options or {})
        reserved = sorted(str(k) for k in options if k in OWN_OPTIONS)
        if reserved:
            raise InvalidParameters(f"sampler option(s) {reserved} are set from the run")
        self._class = getattr(self._optuna.samplers, SAMPLERS[sampler])
        self.constrained = "constraints_func" in inspect.signature(self._class).parameters
        # Optuna 5 reads constraints set on the trial (constraints_func is deprecated there).
        self._set_constraint = hasattr(self._optuna.trial.Trial, "set_constraint")
        self.options = options
        self._make_sampler(0, 1)  # names a bad option now, not at generation 0
        self.config: dict[str, Any] = {"options": dict(options)}
        self._live = Live()

    def _make_sampler(self, seed: int, population_size: int) -> Any:
        options = dict(self.options)
        if self.sampler == "nsga2":
            options.setdefault("population_size", max(population_size, 2))
        if self.sampler == "cmaes":
            options.setdefault("popsize", population_size)
        if self.constrained and not self._set_constraint:
            options["constraints_func"] = violation_of
        try:
            with _quiet(self._optuna):
                return self._class(seed=seed, **options)
        except ImportError as exc:  # GP needs torch and scipy
            raise MissingExtra(
                f"strategy {self.name!r} needs {exc.name or 'more packages'}: {exc}",
                details={"strategy": self.name},
            ) from exc
        except (TypeError, ValueError) as exc:
            raise InvalidParameters(f"strategy {self.name!r}: {str(exc)[:200]}") from exc

    def init(self, space: GeneSpace, params: Parameters) -> StrategyState:
        """No state until generation 0 (the seed is drawn from the run's generator then)."""
        return {}

    def ask(
        self, rng: np.random.Generator, state: StrategyState, run: RunView
    ) -> tuple[Offspring, StrategyState]:
        """``population_size`` trials of ``study.ask``, as genes."""
        space, n = run.space, run.params.population_size
        if "study" not in state:
            seed = seed_from(rng)
            sampler = self._make_sampler(seed, n)
            with _quiet(self._optuna):
                study = self._optuna.create_study(direction="maximize", sampler=sampler)
            saved: list[Any] = [global_state(seed)]
        else:
            study, saved = self._live.get(state["study"])
        fixed = distributions(self._optuna, space)
        with global_random(saved), _quiet(self._optuna):
            trials = [study.ask(fixed) for _ in range(n)]
        genes = _genes(space, [t.params for t in trials])
        token = self._live.asked((study, saved), (trials, genes))
        return Offspring(genes), {**state, "asked": token}

    def tell(
        self,
        rng: np.random.Generator,
        state: StrategyState,
        run: RunView,
        offspring: Offspring,
        scored: Scored,
    ) -> tuple[IntArray, StrategyState]:
        """``study.tell`` every trial; the offspring replace the population."""
        (study, saved), (trials, asked) = self._live.for_tell(state.get("asked"))
        values = scored.fitness if self.constrained else scored.score
        uploaded = (asked != offspring.genes).any(axis=1)
        with global_random(saved), _quiet(self._optuna):
            for row, trial in enumerate(trials):
                if uploaded[row]:  # an uploaded agent took this trial's place
                    study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
                    study.add_trial(
                        self._trial(run.space, offspring.genes[row], values[row], scored, row)
                    )
                    continue
                if not self.constrained:
                    pass
                elif self._set_constraint:
                    trial.set_constraint(VIOLATION, float(scored.violation[row]))
                else:
                    trial.set_user_attr(VIOLATION, float(scored.violation[row]))
                study.tell(trial, float(values[row]))
        text = self._live.told((study, saved))
        n = 0 if run.population is None else len(run.population)
        keep = np.arange(n, n + len(offspring), dtype=np.int64)
        # Counted without a copy: ``study.trials`` deep-copies every trial (~7 ms a
        # generation at 512 trials, more than the rest of the adapter's work).
        trials = len(study.get_trials(deepcopy=False))
        return keep, {"study": text, "trials": trials}

    def _trial(
        self, space: GeneSpace, row: FloatArray, value: float, scored: Scored, i: int
    ) -> Any:
        genome = space.decode(row)
        violation = float(scored.violation[i])
        return self._optuna.trial.create_trial(
            params=genome,
            distributions=distributions(self._optuna, space),
            value=float(value),
            user_attrs={VIOLATION: violation},
            system_attrs=self._constraint_attrs(violation),
        )

    def _constraint_attrs(self, violation: float) -> dict[str, Any] | None:
        """A trial's constraint as Optuna keeps it (the key changed in Optuna 5)."""
        if not self.constrained:
            return None
        if self._set_constraint:
            return {f"constraints:{VIOLATION}": violation}
        return {"constraints": (violation,)}


def distributions(optuna: Any, space: GeneSpace) -> dict[str, Any]:
    """One Optuna distribution per gene, by name."""
    return {gene.name: _distribution(optuna, gene) for gene in space.genes}


def _distribution(optuna: Any, gene: Gene) -> Any:
    d = optuna.distributions
    if isinstance(gene, Categorical):
        return d.CategoricalDistribution(list(gene.choices))
    if isinstance(gene, Integer):
        return d.IntDistribution(int(gene.low), int(gene.high), log=gene.log)
    return d.FloatDistribution(float(gene.low), float(gene.high), log=gene.log)


def _genes(space: GeneSpace, params: list[dict[str, Any]]) -> FloatArray:
    """The trials' parameters as a genes matrix (categorical genes as choice indices)."""
    genes = np.empty((len(params), len(space)), dtype=np.float64)
    for column, gene in enumerate(space.genes):
        if isinstance(gene, Categorical):
            index = {repr(c): i for i, c in enumerate(gene.choices)}
            genes[:, column] = [index[repr(p[gene.name])] for p in params]
        else:
            genes[:, column] = [p[gene.name] for p in params]
    return np.clip(genes, space.low, space.high)


class _quiet:
    """Optuna's logger at WARNING for the call: it logs every finished trial at INFO."""

    def __init__(self, optuna: Any) -> None:
        self._logging = optuna.logging

    def __enter__(self) -> None:
        self._level = self._logging.get_verbosity()
        self._logging.set_verbosity(self._logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self._logging.set_verbosity(self._level)


for _name in SAMPLERS:
    register_strategy(f"optuna-{_name}", functools.partial(OptunaSampler, _name))
