"""Gene spaces: the named, typed genes an agent's genome is made of.

A genome is one row of a ``float64`` matrix of shape ``(population, genes)``:

* ``Float`` genes hold their value (bounded, optionally log-scaled),
* ``Integer`` genes hold an integral value (stored as a float),
* ``Categorical`` genes hold the *index* of their choice.

Operators work on whole matrices; :class:`GeneSpace` gives them the per-column vectors
(bounds, masks) they need, and converts between matrix rows and readable ``dict`` genomes.
"""

from __future__ import annotations

import keyword
import math
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from tdevlab.exceptions import InvalidParameters

FloatArray: TypeAlias = npt.NDArray[np.float64]
GeneValue: TypeAlias = float | int | str | bool

__all__ = ["Categorical", "Float", "Gene", "GeneSpace", "Integer", "bounded"]


@dataclass(frozen=True)
class Float:
    """A real-valued gene in ``[low, high]``; ``log=True`` mutates and samples it in log space."""

    name: str
    low: float
    high: float
    log: bool = False
    kind: Literal["float"] = field(default="float", init=False)

    def __post_init__(self) -> None:
        _check_bounds(self.name, self.low, self.high, self.log)


@dataclass(frozen=True)
class Integer:
    """An integer gene in ``[low, high]`` (both inclusive); ``log=True`` as for :class:`Float`."""

    name: str
    low: int
    high: int
    log: bool = False
    kind: Literal["int"] = field(default="int", init=False)

    def __post_init__(self) -> None:
        _check_bounds(self.name, self.low, self.high, self.log)
        if int(self.low) != self.low or int(self.high) != self.high:
            raise InvalidParameters(f"integer gene {self.name!r} needs integral bounds")


@dataclass(frozen=True)
class Categorical:
    """A gene that takes one of ``choices`` (str, int or bool values, at least two)."""

    name: str
    choices: tuple[GeneValue, ...]
    kind: Literal["categorical"] = field(default="categorical", init=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        object.__setattr__(self, "choices", tuple(self.choices))
        if len(self.choices) < 2:
            raise InvalidParameters(f"categorical gene {self.name!r} needs at least two choices")
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise InvalidParameters(f"categorical gene {self.name!r} has duplicate choices")
        for choice in self.choices:
            if not isinstance(choice, str | int | bool):
                raise InvalidParameters(
                    f"categorical gene {self.name!r}: choice {choice!r} is not a str, int or bool"
                )

    @property
    def low(self) -> float:
        return 0.0

    @property
    def high(self) -> float:
        return float(len(self.choices) - 1)

    @property
    def log(self) -> bool:
        return False


Gene: TypeAlias = Float | Integer | Categorical


def _check_name(name: str) -> None:
    # Agent code states each gene as `name = value`, so a name must be assignable.
    # Python reads identifiers NFKC-normalized ("ﬁx" is "fix"): only normal forms round-trip.
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or keyword.iskeyword(name)
        or unicodedata.normalize("NFKC", name) != name
    ):
        raise InvalidParameters(
            f"gene name {name!r} must be a Python identifier (NFKC-normalized) that is not "
            "a keyword"
        )


def _check_bounds(name: str, low: float, high: float, log: bool) -> None:
    _check_name(name)
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise InvalidParameters(
            f"gene {name!r} needs finite bounds with low < high, got {low}..{high}"
        )
    if log and low <= 0:
        raise InvalidParameters(f"log-scaled gene {name!r} needs low > 0, got {low}")


def bounded(values: Any, low: Any, high: Any, out: FloatArray | None = None) -> FloatArray:
    """``np.clip(values, low, high, out=out)``: maximum then minimum, which is what it
    computes (NaN included), without its per-call Python overhead (~8 us; the engine clips
    a few times a generation)."""
    result: FloatArray = np.minimum(np.maximum(values, low, out=out), high, out=out)
    return result


class GeneSpace:
    """An ordered set of genes, with the per-column vectors that operators use.

    Args:
        genes: The genes, in column order. Names must be unique identifiers.

    Raises:
        InvalidParameters: If there are no genes, or names repeat.
    """

    def __init__(self, genes: Iterable[Gene]) -> None:
        self.genes: tuple[Gene, ...] = tuple(genes)
        if not self.genes:
            raise InvalidParameters("a gene space needs at least one gene")
        self.names: tuple[str, ...] = tuple(g.name for g in self.genes)
        if len(set(self.names)) != len(self.names):
            raise InvalidParameters(f"gene names repeat: {self.names}")
        for name in self.names:
            _check_name(name)
        self.index: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        self.low: FloatArray = np.array([g.low for g in self.genes], dtype=np.float64)
        self.high: FloatArray = np.array([g.high for g in self.genes], dtype=np.float64)
        self.is_categorical = np.array([g.kind == "categorical" for g in self.genes])
        self.is_integer = np.array([g.kind == "int" for g in self.genes])
        self.is_log = np.array([bool(g.log) for g in self.genes])
        self.is_numeric = ~self.is_categorical
        self.n_choices = np.array(
            [len(g.choices) if isinstance(g, Categorical) else 0 for g in self.genes],
            dtype=np.int64,
        )
        # Operators mutate and blend in "search space": log genes by their log.
        self.search_low: FloatArray = np.where(
            self.is_log, np.log(np.where(self.is_log, self.low, 1)), self.low
        )
        self.search_high: FloatArray = np.where(
            self.is_log, np.log(np.where(self.is_log, self.high, 1)), self.high
        )
        self.search_span: FloatArray = self.search_high - self.search_low
        # Fast paths: skip transforms that do nothing for this space.
        self.any_log = bool(self.is_log.any())
        self.any_integer = bool(self.is_integer.any())
        self.any_categorical = bool(self.is_categorical.any())
        self._all_float = all(type(g) is Float for g in self.genes)
        self.numeric_columns = np.flatnonzero(self.is_numeric)
        self.categorical_columns = np.flatnonzero(self.is_categorical)

    def __len__(self) -> int:
        return len(self.genes)

    def __iter__(self) -> Iterator[Gene]:
        return iter(self.genes)

    def __repr__(self) -> str:
        return f"GeneSpace({list(self.genes)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GeneSpace) and self.genes == other.genes

    def __hash__(self) -> int:
        return hash(self.genes)

    # -- search-space transforms (whole matrices) -------------------------------------------

    def to_search(self, genes: FloatArray) -> FloatArray:
        """Return a copy of ``genes`` with log genes replaced by their natural log."""
        out = genes.copy()
        if self.any_log:
            out[:, self.is_log] = np.log(out[:, self.is_log])
        return out

    def from_search(self, search: FloatArray) -> FloatArray:
        """Map search-space values back to genes in place: clip, exponentiate, round integers."""
        bounded(search, self.search_low, self.search_high, out=search)
        if self.any_log:
            search[:, self.is_log] = np.exp(search[:, self.is_log])
            # exp(log(x)) can step a hair outside the bounds.
            bounded(search, self.low, self.high, out=search)
        if self.any_integer:
            cols = self.is_integer
            search[:, cols] = bounded(np.rint(search[:, cols]), self.low[cols], self.high[cols])
        return search

    def cells_from_search(self, columns: npt.NDArray[np.int64], values: FloatArray) -> FloatArray:
        """Map search-space values of scattered cells (gene ``columns[i]`` for ``values[i]``,
        already clipped to the search bounds) back to genes: log genes exponentiated and
        clipped, integer genes rounded. ``values`` may be changed in place."""
        if self.any_log:
            log = self.is_log[columns]
            # exp only where the gene is log-scaled: other values may be large enough to overflow.
            values[log] = np.clip(
                np.exp(values[log]), self.low[columns[log]], self.high[columns[log]]
            )
        if self.any_integer:
            values = np.where(self.is_integer[columns], np.rint(values), values)
        return values

    def random(self, rng: np.random.Generator, n: int) -> FloatArray:
        """Draw ``n`` genomes uniformly over the search space (log genes log-uniformly)."""
        u = rng.random((n, len(self)))
        search = self.search_low + u * self.search_span
        if self.any_categorical:
            cols = self.categorical_columns
            search[:, cols] = np.floor(u[:, cols] * self.n_choices[cols])
        return self.from_search(search)

    def normalized(self, genes: FloatArray) -> FloatArray:
        """Return genes scaled to ``[0, 1]`` per column in search space."""
        search = self.to_search(genes) if self.any_log else genes
        return (search - self.search_low) / self.search_span

    def diversity(self, genes: FloatArray) -> float:
        """Return the mean per-gene standard deviation of the population in ``[0, 1]`` units.

        Accurate to 10 significant digits or better (not bit for bit the two-pass value).
        """
        n = genes.shape[0]
        search = self.to_search(genes) if self.any_log else genes
        # One pass, E[x^2] - E[x]^2: column sums with einsum (no BLAS threads, no temporary).
        mean = np.einsum("ij->j", search) / n
        squares = mean * mean
        variance = np.einsum("ij,ij->j", search, search) / n - squares
        # The subtraction loses about log10(E[x^2] / variance) of the 16 digits: where that
        # is more than 4 (a spread under 1% of the values, e.g. a converged gene far from
        # zero) those columns are recomputed from centered values, which lose none.
        shaky = variance <= 1e-4 * squares
        if shaky.any():
            columns = search[:, shaky]
            centered = columns - np.einsum("ij->j", columns) / n
            variance[shaky] = np.einsum("ij,ij->j", centered, centered) / n
        std = np.sqrt(variance) / self.search_span
        # ndarray.mean's own sum and division (bit for bit), without its Python-level setup.
        return float(np.add.reduce(std)) / int(std.size)

    # -- dict genomes ----------------------------------------------------------------------

    def decode(self, row: Sequence[float] | FloatArray) -> dict[str, GeneValue]:
        """Return one matrix row as a readable ``{name: value}`` genome."""
        values = row.tolist() if isinstance(row, np.ndarray) else [float(v) for v in row]
        return self.decode_values(values)

    def decode_values(self, values: list[float]) -> dict[str, GeneValue]:
        """:meth:`decode` for a row already made a list of Python floats (``tolist``)."""
        if len(values) != len(self.genes):
            raise ValueError(f"a genome row has {len(values)} values, the space {len(self.genes)}")
        if self._all_float:  # the common case, announced with every new best: no per-gene test
            return dict(zip(self.names, values, strict=True))
        out: dict[str, GeneValue] = {}
        for gene, value in zip(self.genes, values, strict=True):
            if isinstance(gene, Categorical):
                out[gene.name] = gene.choices[int(value)]
            elif isinstance(gene, Integer):
                out[gene.name] = int(value)
            else:
                out[gene.name] = float(value)
        return out

    def value(self, column: int, stored: float) -> GeneValue:
        """Return one gene's readable value from its stored float."""
        gene = self.genes[column]
        if isinstance(gene, Categorical):
            return gene.choices[int(stored)]
        if isinstance(gene, Integer):
            return int(stored)
        return float(stored)

    def decode_columns(self, genes: FloatArray) -> dict[str, npt.NDArray[Any]]:
        """Return the matrix as named columns (categorical columns stay as choice indices)."""
        return {name: genes[:, i] for i, name in enumerate(self.names)}

    def encode(self, genome: Mapping[str, Any]) -> FloatArray:
        """Validate a ``{name: value}`` genome and return it as a matrix row.

        Raises:
            InvalidParameters: naming the unknown, missing, mistyped or out-of-bounds gene.
        """
        unknown = sorted(set(genome) - set(self.names))
        if unknown:
            raise InvalidParameters(
                f"unknown gene(s) {unknown}; this gene space has {list(self.names)}",
                details={"unknown_genes": unknown},
            )
        missing = [n for n in self.names if n not in genome]
        if missing:
            raise InvalidParameters(
                f"missing gene(s) {missing}", details={"missing_genes": missing}
            )
        row = np.empty(len(self), dtype=np.float64)
        for i, gene in enumerate(self.genes):
            row[i] = _encode_value(gene, genome[gene.name])
        return row

    def describe(self) -> list[dict[str, Any]]:
        """Return a JSON-ready description of every gene (stored with runs and datasets)."""
        out: list[dict[str, Any]] = []
        for g in self.genes:
            if isinstance(g, Categorical):
                out.append({"name": g.name, "kind": g.kind, "choices": list(g.choices)})
            else:
                out.append(
                    {"name": g.name, "kind": g.kind, "low": g.low, "high": g.high, "log": g.log}
                )
        return out

    @classmethod
    def from_description(cls, description: Iterable[Mapping[str, Any]]) -> GeneSpace:
        """Rebuild a gene space from :meth:`describe` output."""
        genes: list[Gene] = []
        for d in description:
            if d["kind"] == "categorical":
                genes.append(Categorical(d["name"], tuple(d["choices"])))
            elif d["kind"] == "int":
                genes.append(Integer(d["name"], int(d["low"]), int(d["high"]), bool(d["log"])))
            elif d["kind"] == "float":
                genes.append(Float(d["name"], float(d["low"]), float(d["high"]), bool(d["log"])))
            else:
                raise InvalidParameters(
                    f"unknown gene kind {d['kind']!r} for gene {d.get('name')!r}"
                )
        return cls(genes)


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...]) -> FloatArray:
    """This thread's reusable float buffer of ``shape`` (contents undefined)."""
    buffer: FloatArray | None = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.shape != shape:
        buffer = np.empty(shape, dtype=np.float64)
        _SCRATCH.buffer = buffer
    return buffer


def _encode_value(gene: Gene, value: Any) -> float:
    if isinstance(gene, Categorical):
        for index, choice in enumerate(gene.choices):
            # bool is an int subclass: match type as well as value so True != 1.
            if type(choice) is type(value) and choice == value:
                return float(index)
        raise InvalidParameters(
            f"gene {gene.name!r}: {value!r} is not one of {list(gene.choices)}",
            details={"gene": gene.name, "value": repr(value)},
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameters(
            f"gene {gene.name!r}: expected a number, got {type(value).__name__} {value!r}",
            details={"gene": gene.name, "value": repr(value)},
        )
    if isinstance(gene, Integer) and isinstance(value, float) and not value.is_integer():
        raise InvalidParameters(
            f"gene {gene.name!r}: expected an integer, got {value!r}",
            details={"gene": gene.name, "value": value},
        )
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf  # an int too large for a float: out of any bounds
    if not math.isfinite(as_float) or not gene.low <= as_float <= gene.high:
        raise InvalidParameters(
            f"gene {gene.name!r}: {value!r} is outside its bounds [{gene.low}, {gene.high}]",
            details={"gene": gene.name, "value": value, "low": gene.low, "high": gene.high},
        )
    return as_float
