"""Engine parameters: the settings a run can change between generations, validated as a whole."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from tdevlab.exceptions import InvalidParameters
from tdevlab.exceptions import shown as quoted

__all__ = ["BOUNDS", "MAX_POPULATION", "Parameters"]

#: The largest population any engine accepts; an engine's memory budget usually allows
#: fewer (``Engine(max_population_memory=...)``).
MAX_POPULATION = 10_000_000
#: Upper bounds of the numeric parameters (inclusive): beyond them a value is a mistake or
#: an attack, never a setting (a sigma of 10 spans already move a gene anywhere).
BOUNDS: dict[str, float] = {
    "mutation_sigma": 10.0,
    "blend_alpha": 10.0,
    "memory_limit_kb": 1e9,
    "speed_limit_us": 1e9,
}


class Parameters(msgspec.Struct, frozen=True, kw_only=True):
    """Evolution parameters in force for a generation.

    Attributes:
        population_size: Agents per generation (2 ..= ``MAX_POPULATION``; an engine's
            memory budget may allow fewer).
        mutation_rate: Probability that each gene of a child mutates, in [0, 1].
        crossover_rate: Probability that a child is a crossover of two parents, in [0, 1].
        tournament_size: Agents per selection tournament (1 ..= population_size).
        elite_count: Best agents copied unchanged into the next generation
            (0 <= elite_count < population_size).
        mutation_sigma: Gaussian mutation step as a fraction of a gene's search span
            (0 < sigma <= 10).
        crossover: ``"uniform"`` or ``"blend"`` (BLX-alpha on numeric genes).
        blend_alpha: The widening of blend crossover (0 ..= 10).
        memory_limit_kb: Constraint on memory_kb (0 < limit <= 1e9). spec: agent memory
            6.5 KB.
        speed_limit_us: Constraint on speed_us (0 < limit <= 1e9). spec: agent speed 3.0 us.
    """

    population_size: int = 100
    mutation_rate: float = 0.15
    crossover_rate: float = 0.7
    tournament_size: int = 3
    elite_count: int = 2
    mutation_sigma: float = 0.1
    crossover: Literal["uniform", "blend"] = "uniform"
    blend_alpha: float = 0.5
    memory_limit_kb: float = 6.5
    speed_limit_us: float = 3.0

    def replace(self, changes: Mapping[str, Any]) -> Parameters:
        """Return new parameters with ``changes`` applied, after validating all of them.

        Raises:
            InvalidParameters: naming every unknown parameter, or the first invalid value;
                nothing is changed.
        """
        unknown = sorted(str(k)[:64] for k in set(changes) - set(self.__struct_fields__))
        if unknown:
            shown = unknown[:10]  # names come from clients: echo a bounded few
            raise InvalidParameters(
                f"unknown parameter(s) {shown}; known: {list(self.__struct_fields__)}",
                details={"unknown_parameters": shown},
            )
        fields = {name: getattr(self, name) for name in self.__struct_fields__}
        fields.update(changes)
        return Parameters.validated(fields)

    @classmethod
    def validated(cls, fields: Mapping[str, Any]) -> Parameters:
        """Build parameters from a mapping, checking every field.

        Raises:
            InvalidParameters: naming the first invalid value.
        """
        f = dict(fields)
        for name in ("population_size", "tournament_size", "elite_count"):
            f[name] = _integer(name, f[name])
        for name in ("mutation_rate", "crossover_rate"):
            f[name] = _number(name, f[name])
            if not 0.0 <= f[name] <= 1.0:
                _fail(name, f[name], "must be within [0, 1]")
        for name in ("mutation_sigma", "memory_limit_kb", "speed_limit_us"):
            f[name] = _number(name, f[name])
            if not f[name] > 0:
                _fail(name, f[name], "must be > 0")
        f["blend_alpha"] = _number("blend_alpha", f["blend_alpha"])
        if f["blend_alpha"] < 0:
            _fail("blend_alpha", f["blend_alpha"], "must be >= 0")
        for name, top in BOUNDS.items():
            if f[name] > top:
                _fail(name, f[name], f"must be at most {top:g}")
        if not 2 <= f["population_size"] <= MAX_POPULATION:
            _fail("population_size", f["population_size"], f"must be within [2, {MAX_POPULATION}]")
        if not 1 <= f["tournament_size"] <= f["population_size"]:
            _fail(
                "tournament_size",
                f["tournament_size"],
                f"must be within [1, population_size ({f['population_size']})]",
            )
        if not 0 <= f["elite_count"] < f["population_size"]:
            _fail(
                "elite_count",
                f["elite_count"],
                f"must be >= 0 and below population_size ({f['population_size']})",
            )
        if f["crossover"] not in ("uniform", "blend"):
            _fail("crossover", f["crossover"], "must be 'uniform' or 'blend'")
        return cls(**f)

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as a plain dict."""
        return msgspec.structs.asdict(self)


#: How much of a client's value an error message repeats.
SHOWN_CHARS = 64
#: Integers beyond this are refused before any conversion (float() overflows past ~1e308).
_LARGEST = 2**63


def _fail(name: str, value: Any, why: str) -> None:
    shown = quoted(value, SHOWN_CHARS)
    raise InvalidParameters(f"{name}={shown} {why}", details={"parameter": name, "value": shown})


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(name, value, "must be an integer")
    if isinstance(value, int) and abs(value) > _LARGEST:
        _fail(name, value, "is out of range")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        _fail(name, value, "must be an integer")
    return int(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(name, value, "must be a number")
    if isinstance(value, int) and abs(value) > _LARGEST:  # float() would overflow
        _fail(name, value, "is out of range")
    if not math.isfinite(value):
        _fail(name, value, "must be finite")
    return float(value)
