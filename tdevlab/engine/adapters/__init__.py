"""Strategies backed by other optimization libraries: pycma, Optuna and Nevergrad.

Each is an optional extra, imported when the strategy is built (never by ``import
tdevlab``): ``CMAES`` (``"cmaes"``, extra ``cma``), ``OptunaSampler`` (``"optuna-tpe"``,
``"optuna-cmaes"``, ``"optuna-nsga2"``, ``"optuna:<sampler>"``, extra ``optuna``) and
``Nevergrad`` (``"nevergrad:<optimizer>"``, extra ``nevergrad``). Each keeps the library's
whole state in the strategy state (pickled, base64), so a snapshot holds it and pause,
rollback and restart are exact.
"""

from tdevlab.engine.adapters.cma_es import CMAES
from tdevlab.engine.adapters.nevergrad_optimizer import Nevergrad
from tdevlab.engine.adapters.optuna_sampler import OptunaSampler

__all__ = ["CMAES", "Nevergrad", "OptunaSampler"]
