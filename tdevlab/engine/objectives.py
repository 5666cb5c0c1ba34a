"""Objectives and descriptors by name: a problem's outputs or its genes, as whole columns.

A name is ``fitness``, ``memory_kb``, ``speed_us`` (the outputs every problem returns) or
the name of a gene. Strategies that need more than one number per agent (NSGA-II's
objectives, MAP-Elites' behaviour descriptors) read them through :func:`columns`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tdevlab.engine.genes import FloatArray, GeneSpace
from tdevlab.exceptions import InvalidParameters

__all__ = [
    "MAX_OBJECTIVES",
    "OUTPUTS",
    "Objective",
    "check_names",
    "columns",
    "parse_objectives",
]

#: The outputs of every problem (``Problem.evaluate`` returns them in this order).
OUTPUTS: tuple[str, ...] = ("fitness", "memory_kb", "speed_us")

#: The most objectives a strategy takes (exact hypervolume grows exponentially with them).
MAX_OBJECTIVES = 5

#: (name, +1 to maximise or -1 to minimise).
Objective = tuple[str, int]


def check_names(names: Sequence[str], space: GeneSpace, what: str) -> None:
    """Raise InvalidParameters naming any name that is neither an output nor a gene."""
    known = (*OUTPUTS, *space.names)
    unknown = [str(n)[:64] for n in names if n not in known]
    if unknown:
        raise InvalidParameters(
            f"unknown {what}(s) {unknown}: {what}s are the problem's outputs "
            f"{list(OUTPUTS)} or its genes {list(space.names)}",
            details={"unknown": unknown[:10], "what": what},
        )


def parse_objectives(spec: Sequence[str | Sequence[str]]) -> list[Objective]:
    """Objectives from ``"fitness"`` / ``"max:fitness"`` / ``("memory_kb", "min")`` forms.

    A bare name is maximised when it is ``fitness`` and minimised otherwise.

    Raises:
        InvalidParameters: for a direction other than ``max``/``min``, or no objective.
    """
    out: list[Objective] = []
    if isinstance(spec, str) or len(spec) > MAX_OBJECTIVES:
        raise InvalidParameters(
            f"objectives must be a list of 1 to {MAX_OBJECTIVES} names, got {str(spec)[:64]!r}"
        )
    for item in spec:
        if isinstance(item, str):
            direction, _, name = item[:200].rpartition(":")
            direction = direction or ("max" if name == "fitness" else "min")
        else:
            if len(item) != 2:
                raise InvalidParameters(f"objective {item!r} must be (name, 'max' or 'min')")
            name, direction = str(item[0]), str(item[1])
        if direction not in ("max", "min"):
            raise InvalidParameters(
                f"objective {name!r}: direction {direction!r} must be 'max' or 'min'"
            )
        out.append((name, 1 if direction == "max" else -1))
    if not 1 <= len(out) <= MAX_OBJECTIVES:
        raise InvalidParameters(f"give 1 to {MAX_OBJECTIVES} objectives, not {len(out)}")
    names = [name for name, _ in out]
    if len(set(names)) != len(names):
        raise InvalidParameters(f"objectives {names[:10]!r} name one output twice")
    return out


def columns(
    names: Sequence[str],
    space: GeneSpace,
    genes: FloatArray,
    fitness: FloatArray,
    memory_kb: FloatArray,
    speed_us: FloatArray,
) -> FloatArray:
    """The named columns as an ``(n, len(names))`` matrix (genes as stored)."""
    outputs = {"fitness": fitness, "memory_kb": memory_kb, "speed_us": speed_us}
    return np.column_stack(
        [outputs[n] if n in outputs else genes[:, space.index[n]] for n in names]
    ).astype(np.float64, copy=False)
