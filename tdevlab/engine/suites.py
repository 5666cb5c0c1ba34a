"""Standard test problems for multi-objective and quality-diversity strategies.

Each reports its objectives through the outputs every problem has, so strategies select
them by name:

- ``ZDT1`` / ``ZDT2`` (Zitzler, Deb, Thiele 2000): two objectives to minimise, ``f1`` as
  ``memory_kb`` and ``f2`` as ``speed_us``, on ``[0, 1]^dims`` (30 genes by default, as in
  the paper and pymoo); ``fitness`` is ``-(f1 + f2)``. Unconstrained: run them with limits
  above the objectives' range (``memory_limit_kb`` and ``speed_limit_us`` of 1e9).
- ``ProjectedRastrigin``: the QD benchmark of pyribs' tutorials and the CMA-ME paper
  (Fontaine et al. 2020): fitness is the negated Rastrigin function shifted to
  ``0.4 * bound`` on ``[-5.12, 5.12]^dims``; the two behaviour descriptors are the sums of
  the clipped first and second halves of the genes, reported as ``memory_kb`` and
  ``speed_us`` (MAP-Elites' default descriptors). Each lies in ``[-r, r]`` with
  ``r = measure_range``: give MapElites ``ranges=[(-r, r)] * 2`` and the run limits of
  1e9 (the default grid spans ``[0, 2 x limit]``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from tdevlab.engine.genes import Float, FloatArray, GeneSpace
from tdevlab.engine.problems import Evaluation, register_problem
from tdevlab.exceptions import InvalidParameters

__all__ = ["ZDT1", "ZDT2", "ProjectedRastrigin"]


def _dims(dims: object, least: int) -> int:
    if isinstance(dims, bool) or not isinstance(dims, int | np.integer) or dims < least:
        raise InvalidParameters(f"dims must be an integer >= {least}, got {dims!r}")
    return int(dims)


class _ZDT(ABC):
    """Shared parts of ZDT1 and ZDT2: g over the tail genes; each defines f2."""

    name = "zdt"
    role_names = ("Pareto",)

    def __init__(self, dims: int = 30) -> None:
        self.dims = _dims(dims, 2)
        self.gene_space = GeneSpace([Float(f"x{i}", 0.0, 1.0) for i in range(self.dims)])
        self.config: dict[str, Any] = {"dims": self.dims}

    @abstractmethod
    def _f2(self, f1: FloatArray, g: FloatArray) -> FloatArray:
        """The second objective from f1 and g."""

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """``memory_kb`` = f1, ``speed_us`` = f2 (both minimised), ``fitness`` = -(f1 + f2)."""
        f1 = genes[:, 0].copy()
        g = 1.0 + 9.0 * genes[:, 1:].sum(axis=1) / (self.dims - 1)
        f2 = self._f2(f1, g)
        return Evaluation(-(f1 + f2), f1, f2)


class ZDT1(_ZDT):
    """ZDT1: a convex front, ``f2 = g (1 - sqrt(f1 / g))``."""

    name = "zdt1"

    def _f2(self, f1: FloatArray, g: FloatArray) -> FloatArray:
        return g * (1.0 - np.sqrt(f1 / g))


class ZDT2(_ZDT):
    """ZDT2: a concave front, ``f2 = g (1 - (f1 / g)^2)``."""

    name = "zdt2"

    def _f2(self, f1: FloatArray, g: FloatArray) -> FloatArray:
        return g * (1.0 - (f1 / g) ** 2)


class ProjectedRastrigin:
    """Negated shifted Rastrigin with two linear-projection measures (pyribs' benchmark)."""

    name = "projected_rastrigin"
    role_names = ("Explorer",)
    bound = 5.12

    def __init__(self, dims: int = 20) -> None:
        self.dims = _dims(dims, 2)
        self.gene_space = GeneSpace(
            [Float(f"x{i}", -self.bound, self.bound) for i in range(self.dims)]
        )
        self.config: dict[str, Any] = {"dims": self.dims}

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """fitness = -Rastrigin(x - 0.4 bound); measures = clipped half sums."""
        shifted = genes - 0.4 * self.bound
        value = 10.0 * self.dims + np.sum(
            shifted * shifted - 10.0 * np.cos(2.0 * np.pi * shifted), axis=1
        )
        # Measures as in pyribs' tutorial: clip each gene to the bound, sum each half.
        clipped = np.where(np.abs(genes) > self.bound, self.bound / genes, genes)
        half = self.dims // 2
        return Evaluation(-value, clipped[:, :half].sum(axis=1), clipped[:, half:].sum(axis=1))

    @property
    def measure_range(self) -> float:
        """Each measure's range is ``[-r, r]`` with this ``r``."""
        return self.bound * (self.dims // 2)


register_problem("zdt1", ZDT1)
register_problem("zdt2", ZDT2)
register_problem("projected_rastrigin", ProjectedRastrigin)
