"""Problems for the distributed-evaluation tests, importable by worker processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from tdevlab import Evaluation, Sphere
from tdevlab.engine.distributed import BUFFER_ALIGNMENT
from tdevlab.engine.genes import FloatArray, GeneValue


class CountingSphere(Sphere):
    """A Sphere that appends its process id to ``log_path`` each time it is unpickled."""

    def __init__(self, dims: int, log_path: Path) -> None:
        super().__init__(dims)
        self.log_path = str(log_path)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the attributes and record the unpickling."""
        self.__dict__.update(state)
        with open(self.log_path, "a") as log:
            log.write(f"{os.getpid()}\n")


class KillingSphere(Sphere):
    """A Sphere whose evaluation SIGKILLs its own process.

    With ``once=True`` only the first evaluation anywhere dies (it creates ``marker``
    atomically); otherwise every evaluation dies while ``marker`` exists.
    """

    def __init__(self, dims: int, marker: Path, *, once: bool) -> None:
        super().__init__(dims)
        self.marker = str(marker)
        self.once = once

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """Die as configured, else evaluate as Sphere."""
        if self.once:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        elif os.path.exists(self.marker):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().evaluate(genes)


class RaisingSphere(Sphere):
    """A batch problem that raises RuntimeError when its batch holds the row ``poison``."""

    def __init__(self, dims: int, poison: list[float]) -> None:
        super().__init__(dims)
        self.poison = list(poison)

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """Raise on the poisoned row, else evaluate as Sphere."""
        if (genes == self.poison).all(axis=1).any():
            raise RuntimeError("simulator diverged")
        return super().evaluate(genes)


class FailOn:
    """A per-agent fitness function that raises ValueError for the agent with ``x == value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, genome: dict[str, GeneValue]) -> float:
        """Return -x**2, or raise for the chosen agent."""
        x = float(genome["x"])  # type: ignore[arg-type]
        if x == self.value:
            raise ValueError(f"cannot simulate x={x:.3f}")
        return -(x**2)


class AlignmentProbe(Sphere):
    """A Sphere holding NumPy data whose fitness says whether that data arrived intact.

    Every agent scores 1.0 when each array starts on a ``BUFFER_ALIGNMENT`` boundary, is
    writable and holds the values it was made with, else 0.0.
    """

    def __init__(self, dims: int) -> None:
        super().__init__(dims)
        rng = np.random.default_rng(5)
        self.arrays = {
            "matrix": rng.standard_normal((301, 7)),
            "fortran": np.asfortranarray(rng.standard_normal((13, 5))),
            "odd_view": np.arange(1001, dtype=np.float64)[3:],  # pickled as its own copy
            "ints": np.arange(77, dtype=np.int32),
            "empty": np.zeros(0),
        }
        self.sums = {name: float(a.sum()) for name, a in self.arrays.items()}

    def intact(self) -> bool:
        """Whether every array is aligned, writable and unchanged."""
        return all(
            (a.size == 0 or a.ctypes.data % BUFFER_ALIGNMENT == 0)
            and a.flags.writeable
            and float(a.sum()) == self.sums[name]
            for name, a in self.arrays.items()
        )

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """Sphere's memory and speed, with fitness 1.0 if :meth:`intact` else 0.0."""
        evaluation = super().evaluate(genes)
        fitness = np.full(genes.shape[0], 1.0 if self.intact() else 0.0)
        return Evaluation(fitness, evaluation.memory_kb, evaluation.speed_us)
