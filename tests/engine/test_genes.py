"""Gene spaces: dict genomes, validation errors, random draws and JSON descriptions.

The hypothesis strategies defined here (``gene_spaces``, ``genome_rows``, ``populations``)
and ``assert_valid_genes`` are shared by the other engine test modules.
"""

from __future__ import annotations

import json
import keyword
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tdevlab.engine.genes import Categorical, Float, Gene, GeneSpace, Integer
from tdevlab.exceptions import InvalidParameters

# Names that a Python assignment cannot bind (keywords, __debug__) are tested on their own
# in test_code.py; the shared strategies stick to plain ASCII names.
_RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | {"__debug__"}

gene_names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(
    lambda name: name not in _RESERVED
)
choice_values = st.one_of(st.text(max_size=8), st.integers(-1000, 1000), st.booleans())


@st.composite
def genes_named(draw: st.DrawFn, name: str) -> Gene:
    """Draw a Float (maybe log), Integer (maybe log) or Categorical gene called ``name``."""
    kind = draw(st.sampled_from(["float", "float_log", "int", "int_log", "categorical"]))
    if kind == "float":
        low = draw(st.floats(-1e6, 1e6))
        return Float(name, low, low + draw(st.floats(1e-3, 1e6)))
    if kind == "float_log":
        low = draw(st.floats(1e-6, 1e3))
        return Float(name, low, low * draw(st.floats(1.01, 1e6)), log=True)
    if kind == "int":
        low_int = draw(st.integers(-(10**6), 10**6))
        return Integer(name, low_int, low_int + draw(st.integers(1, 10**6)))
    if kind == "int_log":
        low_int = draw(st.integers(1, 1000))
        return Integer(name, low_int, low_int + draw(st.integers(1, 10**5)), log=True)
    choices = draw(st.lists(choice_values, min_size=2, max_size=5, unique_by=repr))
    return Categorical(name, tuple(choices))


@st.composite
def gene_spaces(draw: st.DrawFn, max_genes: int = 6) -> GeneSpace:
    """Draw a gene space mixing every gene kind, with unique identifier names."""
    size = draw(st.integers(1, max_genes))
    names = draw(st.lists(gene_names, min_size=size, max_size=size, unique=True))
    return GeneSpace([draw(genes_named(name)) for name in names])


def gene_values(gene: Gene) -> st.SearchStrategy[float]:
    """Return a strategy of valid matrix values for ``gene`` (bounds included)."""
    if isinstance(gene, Categorical):
        return st.integers(0, len(gene.choices) - 1).map(float)
    if isinstance(gene, Integer):
        return st.integers(int(gene.low), int(gene.high)).map(float)
    return st.floats(gene.low, gene.high)


@st.composite
def genome_rows(draw: st.DrawFn, space: GeneSpace) -> np.ndarray:
    """Draw one valid genome row of ``space``."""
    return np.array([draw(gene_values(gene)) for gene in space.genes], dtype=np.float64)


@st.composite
def populations(draw: st.DrawFn, space: GeneSpace, max_rows: int = 8) -> np.ndarray:
    """Draw a ``(n, len(space))`` matrix of valid genomes."""
    n = draw(st.integers(1, max_rows))
    return np.array([draw(genome_rows(space)) for _ in range(n)], dtype=np.float64).reshape(
        n, len(space)
    )


def assert_valid_genes(space: GeneSpace, genes: np.ndarray) -> None:
    """Assert every cell is finite, in bounds, integral where needed, a valid choice index."""
    assert genes.dtype == np.float64
    assert genes.ndim == 2
    assert genes.shape[1] == len(space)
    assert np.all(np.isfinite(genes))
    assert np.all(genes >= space.low), (genes, space)
    assert np.all(genes <= space.high), (genes, space)
    integral = space.is_integer | space.is_categorical
    assert np.array_equal(genes[:, integral], np.rint(genes[:, integral]))
    cat = space.categorical_columns
    assert np.all(genes[:, cat] < space.n_choices[cat])


SPACE = GeneSpace(
    [
        Float("rate", 1e-5, 1e-1, log=True),
        Float("temperature", 0.0, 2.0),
        Integer("width", 1, 64),
        Integer("window", 16, 4096, log=True),
        Categorical("arch", ("mlp", "rnn", "transformer")),
        Categorical("flag", (False, True)),
    ]
)
VALID: dict[str, Any] = {
    "rate": 0.001,
    "temperature": 0.5,
    "width": 8,
    "window": 256,
    "arch": "rnn",
    "flag": True,
}
FAST = settings(max_examples=60, deadline=None, database=None)


@FAST
@given(data=st.data())
def test_encode_decode_round_trip(data: st.DataObject) -> None:
    """encode(decode(row)) gives back the row, and decode gives each gene its Python type."""
    space = data.draw(gene_spaces())
    row = data.draw(genome_rows(space))
    genome = space.decode(row)
    assert list(genome) == list(space.names)
    np.testing.assert_array_equal(space.encode(genome), row)
    for gene, value in zip(space.genes, row, strict=True):
        decoded = genome[gene.name]
        if isinstance(gene, Categorical):
            choice = gene.choices[int(value)]
            assert type(decoded) is type(choice)
            assert decoded == choice
        elif isinstance(gene, Integer):
            assert type(decoded) is int
        else:
            assert type(decoded) is float


def test_encode_accepts_a_valid_genome() -> None:
    """A valid dict genome encodes to the row of values and choice indices."""
    np.testing.assert_array_equal(SPACE.encode(VALID), [0.001, 0.5, 8.0, 256.0, 1.0, 1.0])


def test_encode_unknown_gene_is_named() -> None:
    """An unknown gene name is refused and named in the message and details."""
    with pytest.raises(InvalidParameters, match="bogus") as info:
        SPACE.encode({**VALID, "bogus": 1.0})
    assert info.value.details["unknown_genes"] == ["bogus"]


def test_encode_missing_gene_is_named() -> None:
    """A missing gene is refused and named in the message and details."""
    genome = dict(VALID)
    del genome["window"]
    with pytest.raises(InvalidParameters, match="window") as info:
        SPACE.encode(genome)
    assert info.value.details["missing_genes"] == ["window"]


@pytest.mark.parametrize(
    ("gene", "value"),
    [
        ("rate", 0.5),
        ("rate", 1e-6),
        ("temperature", -0.1),
        ("temperature", 2.0000001),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("width", 0),
        ("width", 65),
        ("window", 8192),
    ],
)
def test_encode_out_of_bounds_value_is_named(gene: str, value: float) -> None:
    """A value outside its gene's bounds (or not finite) is refused, naming the gene."""
    with pytest.raises(InvalidParameters, match=gene) as info:
        SPACE.encode({**VALID, gene: value})
    assert info.value.details["gene"] == gene


@pytest.mark.parametrize("gene", ["temperature", "width", "rate"])
def test_encode_huge_integer_is_out_of_bounds(gene: str) -> None:
    """An int too large for a float (10**400) is refused as InvalidParameters naming the gene."""
    with pytest.raises(InvalidParameters, match=gene):
        SPACE.encode({**VALID, gene: 10**400})


@pytest.mark.parametrize(
    ("gene", "value"),
    [
        ("temperature", "0.5"),
        ("temperature", None),
        ("temperature", True),
        ("temperature", [0.5]),
        ("width", 2.5),
        ("width", "8"),
        ("width", False),
    ],
)
def test_encode_wrong_type_is_named(gene: str, value: Any) -> None:
    """A non-number (bools included) or a fractional integer is refused, naming the gene."""
    with pytest.raises(InvalidParameters, match=gene) as info:
        SPACE.encode({**VALID, gene: value})
    assert info.value.details["gene"] == gene


@pytest.mark.parametrize(
    ("gene", "value"), [("arch", "cnn"), ("arch", 1), ("flag", 1), ("flag", "True")]
)
def test_encode_invalid_choice_is_named(gene: str, value: Any) -> None:
    """A value that is not one of a categorical gene's choices is refused, naming the gene."""
    with pytest.raises(InvalidParameters, match=gene) as info:
        SPACE.encode({**VALID, gene: value})
    assert info.value.details["gene"] == gene


def test_categorical_distinguishes_bool_from_int() -> None:
    """True is not the choice 1 (nor 1 the choice True), and decode keeps the choice's type."""
    space = GeneSpace([Categorical("c", (1, True, 0, False))])
    assert space.encode({"c": 1})[0] == 0.0
    assert space.encode({"c": True})[0] == 1.0
    assert space.encode({"c": 0})[0] == 2.0
    assert space.encode({"c": False})[0] == 3.0
    assert [type(space.decode([i])["c"]) for i in range(4)] == [int, bool, int, bool]
    ints = GeneSpace([Categorical("c", (0, 1))])
    with pytest.raises(InvalidParameters, match="'c'"):
        ints.encode({"c": True})
    bools = GeneSpace([Categorical("c", (False, True))])
    with pytest.raises(InvalidParameters, match="'c'"):
        bools.encode({"c": 1})


@FAST
@given(space=gene_spaces(), seed=st.integers(0, 2**32 - 1), n=st.integers(0, 50))
def test_random_respects_bounds(space: GeneSpace, seed: int, n: int) -> None:
    """random() gives n genomes inside bounds, integral where needed, valid choice indices."""
    genes = space.random(np.random.default_rng(seed), n)
    assert genes.shape == (n, len(space))
    assert_valid_genes(space, genes)


@settings(max_examples=30, deadline=None, database=None)
@given(space=gene_spaces(), seed=st.integers(0, 2**32 - 1))
def test_random_same_seed_same_genomes(space: GeneSpace, seed: int) -> None:
    """Two generators with the same seed draw identical genomes."""
    a = space.random(np.random.default_rng(seed), 20)
    b = space.random(np.random.default_rng(seed), 20)
    np.testing.assert_array_equal(a, b)


def test_random_reaches_every_choice_and_integer_endpoint() -> None:
    """Over many draws every categorical choice and both integer bounds occur."""
    genes = SPACE.random(np.random.default_rng(5), 4000)
    assert set(genes[:, SPACE.index["arch"]]) == {0.0, 1.0, 2.0}
    assert set(genes[:, SPACE.index["flag"]]) == {0.0, 1.0}
    width = genes[:, SPACE.index["width"]]
    assert width.min() == 1.0
    assert width.max() == 64.0


@FAST
@given(space=gene_spaces())
def test_describe_from_description_round_trip(space: GeneSpace) -> None:
    """from_description(describe()) rebuilds an equal space, also after a JSON round trip."""
    description = space.describe()
    assert GeneSpace.from_description(description) == space
    rebuilt = GeneSpace.from_description(json.loads(json.dumps(description)))
    assert rebuilt == space
    assert rebuilt.describe() == description


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Float("lo_eq_hi", 1.0, 1.0), "lo_eq_hi"),
        (lambda: Float("lo_gt_hi", 2.0, 1.0), "lo_gt_hi"),
        (lambda: Float("nan_bound", math.nan, 1.0), "nan_bound"),
        (lambda: Float("inf_bound", 0.0, math.inf), "inf_bound"),
        (lambda: Integer("int_eq", 3, 3), "int_eq"),
        (lambda: Integer("int_gt", 5, 2), "int_gt"),
        (lambda: Integer("int_frac", 0, 2.5), "int_frac"),
        (lambda: Float("log_zero", 0.0, 1.0, log=True), "log_zero"),
        (lambda: Float("log_negative", -1.0, 1.0, log=True), "log_negative"),
        (lambda: Integer("int_log_zero", 0, 10, log=True), "int_log_zero"),
        (lambda: Float("1abc", 0.0, 1.0), "1abc"),
        (lambda: Float("a-b", 0.0, 1.0), "a-b"),
        (lambda: Integer("a b", 0, 1), "a b"),
        (lambda: GeneSpace([Categorical("bad name", ("a", "b"))]), "bad name"),
        (lambda: GeneSpace([Categorical("", ("a", "b"))]), "''"),
        (lambda: Categorical("one_choice", ("a",)), "one_choice"),
        (lambda: Categorical("no_choice", ()), "no_choice"),
        (lambda: Categorical("dup_choice", ("a", "a")), "dup_choice"),
        (lambda: Categorical("float_choice", ("a", 1.5)), "float_choice"),
        (lambda: Categorical("none_choice", ("a", None)), "none_choice"),
        (lambda: GeneSpace([Float("twice", 0, 1), Integer("twice", 0, 1)]), "twice"),
        (lambda: GeneSpace([]), "at least one gene"),
        (
            lambda: GeneSpace.from_description([{"name": "odd", "kind": "complex"}]),
            "odd",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_invalid_gene_definitions_raise(make: Any, name: str) -> None:
    """Bad bounds, log with low <= 0, bad/duplicate names, < 2 choices raise InvalidParameters."""
    with pytest.raises(InvalidParameters) as info:
        make()
    assert name in str(info.value)


@FAST
@given(data=st.data())
def test_normalized_lies_in_unit_interval(data: st.DataObject) -> None:
    """normalized() maps every valid genome into [0, 1] per column."""
    space = data.draw(gene_spaces())
    genes = data.draw(populations(space))
    normalized = space.normalized(genes)
    assert normalized.shape == genes.shape
    assert np.all(normalized >= -1e-12)
    assert np.all(normalized <= 1 + 1e-12)


# No shrinking: while diversity() loses precision (see the test below) shrinking a failure
# takes seconds; the explicit test already gives the minimal example.
@settings(FAST, phases=[Phase.explicit, Phase.generate])
@given(data=st.data())
def test_diversity_is_in_unit_range(data: st.DataObject) -> None:
    """diversity() lies in [0, 0.5] and is (close to) 0 for a population of one genome."""
    space = data.draw(gene_spaces())
    genes = data.draw(populations(space))
    assert -1e-12 <= space.diversity(genes) <= 0.5 + 1e-9
    clones = np.repeat(genes[:1], 6, axis=0)
    assert space.diversity(clones) == pytest.approx(0.0, abs=1e-6)


def test_diversity_of_identical_genomes_near_large_bounds_is_zero() -> None:
    """Identical genomes have diversity 0 even for a narrow gene far from zero."""
    space = GeneSpace([Float("offset", 1e6, 1e6 + 1e-3)])
    genes = np.full((7, 1), 1e6 + 3e-4)
    assert space.diversity(genes) == pytest.approx(0.0, abs=1e-6)


def _exact_diversity(space: GeneSpace, genes: np.ndarray) -> float:
    """diversity() computed with exactly rounded sums (math.fsum), column by column."""
    search = space.to_search(genes) if space.any_log else genes
    stds = []
    for column, span in zip(search.T.tolist(), space.search_span.tolist(), strict=True):
        mean = math.fsum(column) / len(column)
        variance = math.fsum((x - mean) ** 2 for x in column) / len(column)
        stds.append(math.sqrt(variance) / span)
    return math.fsum(stds) / len(stds)


@FAST
@given(data=st.data())
def test_diversity_has_ten_significant_digits(data: st.DataObject) -> None:
    """The one-pass diversity() agrees with an exactly summed two-pass one to 1e-10."""
    space = data.draw(gene_spaces())
    genes = data.draw(populations(space))
    assert space.diversity(genes) == pytest.approx(_exact_diversity(space, genes), rel=1e-10)


@pytest.mark.parametrize("offset", [0.0, 1.0, 1e3, 1e6, 1e9])
@pytest.mark.parametrize("spread", [1.0, 1e-4, 1e-8])
def test_diversity_of_a_converged_gene_far_from_zero(offset: float, spread: float) -> None:
    """A spread tiny against the values (the one-pass formula's weak case) stays accurate."""
    space = GeneSpace([Float("a", offset - 2.0, offset + 2.0), Float("b", -1.0, 1.0)])
    rng = np.random.default_rng(5)
    genes = np.column_stack(
        [offset + spread * rng.standard_normal(1000), rng.uniform(-1.0, 1.0, 1000)]
    )
    assert space.diversity(genes) == pytest.approx(_exact_diversity(space, genes), rel=1e-10)
