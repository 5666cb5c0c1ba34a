"""A kept generation as its changes to the generation it was made from (memory store).

An archive strategy changes a few rows of thousands a generation. Keeping every
generation's whole population for rollback then costs its full size each generation:
hundreds of KB for an archive of a few thousand elites, fresh memory every time. A
generation whose rows mostly come from its parent is kept instead as where those rows
were in the parent (``Snapshot.source``), its new rows whole, and the two columns that
depend on the generation itself (``violation`` and ``status``: the limits and the elites
may change). Made back by applying the changes to the parent, itself made back the same
way; the store keeps every :data:`CHECKPOINT`-th generation whole, so that takes at most
``CHECKPOINT - 1`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tdevlab.engine.operators import IntArray
from tdevlab.engine.population import Population

__all__ = ["CHECKPOINT", "Changes"]

#: Every this many generations a population is kept whole.
CHECKPOINT = 32
#: Columns a kept row carries over unchanged from the parent.
_CARRIED = tuple(c for c in Population.COLUMNS if c not in ("violation", "status"))


@dataclass(frozen=True)
class Changes:
    """A population as changes to its parent's (see the module's text).

    Attributes:
        base: The store's key of the parent generation, ``(branch, generation)``.
        source: Per row, the parent's row it was taken from; -1 for a new agent.
        fresh_rows: The rows that are new agents.
        fresh: Their values, per carried column.
        violation, status: The whole columns.
    """

    base: tuple[int, int]
    source: IntArray
    fresh_rows: IntArray
    fresh: dict[str, np.ndarray]
    violation: np.ndarray
    status: np.ndarray

    @classmethod
    def of(cls, base: tuple[int, int], population: Population, source: IntArray) -> Changes | None:
        """The changes of ``population`` to the parent keyed ``base``; ``None`` when at most
        half its rows come from the parent (whole is then about as small)."""
        if source.shape != (len(population),):
            return None
        fresh_rows = np.flatnonzero(source < 0)
        if 2 * fresh_rows.size >= source.size:
            return None
        fresh = {c: getattr(population, c)[fresh_rows] for c in _CARRIED}
        return cls(base, source, fresh_rows, fresh, population.violation, population.status)

    @property
    def nbytes(self) -> int:
        """The bytes of the arrays kept."""
        arrays = [self.source, self.fresh_rows, self.violation, self.status, *self.fresh.values()]
        return sum(int(a.nbytes) for a in arrays)

    def apply(self, parent: Population) -> Population:
        """The population, made from its parent's (bit for bit the one recorded)."""
        taken = self.source
        columns = {}
        for c in _CARRIED:
            old = getattr(parent, c)
            out = np.empty((taken.size, *old.shape[1:]), dtype=old.dtype)
            # Kept rows from the parent (new rows clipped to any row, then overwritten).
            np.take(old, taken, axis=0, out=out, mode="clip")
            out[self.fresh_rows] = self.fresh[c]
            columns[c] = out
        return Population(violation=self.violation, status=self.status, **columns)
