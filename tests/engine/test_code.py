"""Agent code: rendering a genome as Python and parsing it back without ever running it."""

from __future__ import annotations

import ast
import builtins
import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tdevlab.engine.code import parse_agent_code, render_agent_code
from tdevlab.engine.genes import Categorical, Float, GeneSpace, Integer
from tdevlab.engine.problems import AgentDesign
from tdevlab.exceptions import ConstraintViolation, InvalidAgentCode, InvalidParameters
from tests.engine.test_genes import assert_valid_genes, gene_spaces, genome_rows

#: The engine's limit: its memory limit (6.5 KB) in bytes.
LIMIT = int(6.5 * 1024)
SPACE = AgentDesign().gene_space
GOOD = {
    "learning_rate": 0.001,
    "temperature": 0.7,
    "context_window": 4096,
    "cache_kb": 1.5,
    "parallelism": 4,
    "architecture": "transformer",
    "retrieval": True,
    "tool_use": False,
    "memory": True,
}
GOOD_SOURCE = render_agent_code(SPACE, SPACE.encode(GOOD), agent_id="agent-7", name="Agent_v7")


@contextlib.contextmanager
def no_code_execution(calls: list[str]) -> Iterator[None]:
    """Make exec, eval, imports, os.system and compiling to bytecode fail (and be logged)."""
    real_compile = builtins.compile

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            calls.append(what)
            raise AssertionError(f"{what} was called while parsing agent code")

        return refused

    real_import = builtins.__import__

    def import_only_unicodedata(name: str, *args: Any, **kwargs: Any) -> Any:
        # The parser itself imports unicodedata to normalize non-ASCII identifiers.
        if name != "unicodedata":
            calls.append(f"import {name}")
            raise AssertionError(f"{name} was imported while parsing agent code")
        return real_import(name, *args, **kwargs)

    def ast_only_compile(source: Any, filename: Any, mode: str, flags: int = 0, *a: Any, **k: Any):
        if not flags & ast.PyCF_ONLY_AST:
            calls.append("compile")
            raise AssertionError("agent code was compiled to bytecode")
        return real_compile(source, filename, mode, flags, *a, **k)

    with (
        mock.patch.object(builtins, "exec", refuse("exec")),
        mock.patch.object(builtins, "eval", refuse("eval")),
        mock.patch.object(builtins, "compile", ast_only_compile),
        mock.patch.object(os, "system", refuse("os.system")),
        mock.patch.object(builtins, "__import__", import_only_unicodedata),
    ):
        yield


def parse_safely(source: str | bytes, space: GeneSpace = SPACE, max_bytes: int = LIMIT) -> Any:
    """Call parse_agent_code with execution forbidden, and check nothing tried to run."""
    calls: list[str] = []
    try:
        with no_code_execution(calls):
            return parse_agent_code(source, space, max_bytes=max_bytes)
    finally:
        assert not calls, calls


# -- round trip ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, database=None)
@given(
    data=st.data(),
    agent_id=st.from_regex(r"agent-[0-9]{1,6}", fullmatch=True),
    name=st.from_regex(r"[A-Za-z_]{1,12}_v[0-9]{1,4}", fullmatch=True),
    generation=st.integers(0, 10**6),
)
def test_render_parse_round_trip(data: st.DataObject, agent_id: str, name: str, generation: int):
    """parse(render(row)) gives back exactly the same row, bit for bit."""
    space = data.draw(gene_spaces())
    row = data.draw(genome_rows(space))
    source = render_agent_code(space, row, agent_id=agent_id, name=name, generation=generation)
    parsed = parse_safely(source, space, max_bytes=10**6)
    assert parsed.dtype == np.float64
    assert parsed.shape == row.shape
    assert parsed.tobytes() == row.tobytes(), (source, row, parsed)
    assert parse_safely(source.encode("utf-8"), space, max_bytes=10**6).tobytes() == row.tobytes()


TRICKY = GeneSpace(
    [
        Float("learning_rate", 1e-5, 1e-1, log=True),
        Float("x", -1.0, 1.0),
        Float("tiny", 0.0, 1e-300),
        Integer("window", 256, 32768, log=True),
        Integer("offset", -5, 5),
        Categorical("arch", ("mlp", 'it\'s "quoted"\n', "naïve ☃")),
        Categorical("mixed", (1, True, 0, False, "1")),
    ]
)


@pytest.mark.parametrize(
    "row",
    [
        [1e-05, -1.0, 0.0, 256, -5, 0, 0],
        [0.1, 1.0, 1e-300, 32768, 5, 2, 4],
        [0.0031622776601683794, 0.1 + 0.2, 5e-324, 1000, 0, 1, 1],
        [1.0000000000000002e-05, -0.0, 2.2250738585072014e-308, 257, -1, 2, 3],
        [0.09999999999999999, 1 / 3, 1e-301, 32767, 4, 1, 2],
    ],
)
def test_round_trip_of_bounds_and_awkward_floats(row: list[float]) -> None:
    """Bounds, 1e-05, subnormals, -0.0, quoted and non-ASCII choices survive render/parse."""
    genes = np.array(row, dtype=np.float64)
    source = render_agent_code(TRICKY, genes, agent_id="agent-1", name="Tricky", generation=3)
    assert parse_safely(source, TRICKY, max_bytes=10**6).tobytes() == genes.tobytes()


def test_rendered_source_is_readable() -> None:
    """The source names the agent on its first line, then has one `gene = literal` per gene."""
    source = render_agent_code(
        SPACE, SPACE.encode(GOOD), agent_id="agent-42", name="NL_Input_Agent_v42", generation=17
    )
    lines = source.splitlines()
    assert "NL_Input_Agent_v42 (agent-42), born in generation 17." in lines[0]
    assert lines[1:] == [f"{name} = {value!r}" for name, value in GOOD.items()]
    assert source.endswith("\n")
    anonymous = render_agent_code(SPACE, SPACE.encode(GOOD)).splitlines()
    assert anonymous[1:] == lines[1:]


@pytest.mark.parametrize("name", ["class", "None", "lambda", "__debug__", "ﬁx"])
def test_every_accepted_gene_name_round_trips(name: str) -> None:
    """A gene name GeneSpace accepts can be rendered and parsed back (or GeneSpace refuses it)."""
    try:
        space = GeneSpace([Float(name, 0.0, 1.0)])
    except InvalidParameters:
        return  # refusing the name up front is fine too
    source = render_agent_code(space, np.array([0.5]))
    np.testing.assert_array_equal(parse_safely(source, space), [0.5])


@settings(max_examples=100, deadline=None, database=None)
@given(
    name=st.one_of(
        st.from_regex(r"[^\W\d]\w{0,6}", fullmatch=True),
        st.sampled_from(["class", "None", "lambda", "__debug__", "match", "_"]),
    ),
    value=st.floats(-1.0, 1.0),
)
def test_any_accepted_unicode_gene_name_round_trips(name: str, value: float) -> None:
    """Whatever identifier GeneSpace accepts as a name survives render/parse."""
    try:
        space = GeneSpace([Float(name, -1.0, 1.0)])
    except InvalidParameters:
        assume(False)
    row = np.array([value])
    assert parse_safely(render_agent_code(space, row), space).tobytes() == row.tobytes()


@pytest.mark.parametrize(
    "name", ['Quote"""Agent', "Agent\\N_v1", 'x"""\nimport os\n"""', "Agent\ntemperature = 1.9"]
)
def test_agent_names_cannot_break_the_rendered_source(name: str) -> None:
    """Quotes, backslashes or line breaks in an agent name cannot change what the code states."""
    source = render_agent_code(SPACE, SPACE.encode(GOOD), agent_id="agent-1", name=name)
    np.testing.assert_array_equal(parse_safely(source), SPACE.encode(GOOD))


def test_parse_accepts_source_exactly_at_the_limit() -> None:
    """A source of exactly max_bytes bytes is not refused for its size."""
    source = GOOD_SOURCE + "#" * (LIMIT - len(GOOD_SOURCE.encode()) - 1) + "\n"
    assert len(source.encode()) == LIMIT
    np.testing.assert_array_equal(parse_safely(source), SPACE.encode(GOOD))


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os", ["line 1", "Import"]),
        ('"""doc"""\ntemperature = 0.5\nimport os', ["line 3", "Import"]),
        ("from os import path", ["line 1", "ImportFrom"]),
        ("temperature = os.path", ["line 1", "Attribute"]),
        ("x = os.path", ["line 1", "Attribute"]),
        ("temperature = lambda: 0.5", ["line 1", "Lambda"]),
        ("architecture = f'{1}'", ["line 1", "JoinedStr"]),
        ("temperature = [0.5 for _ in range(3)]", ["line 1", "ListComp"]),
        ("temperature = {k: 1 for k in 'ab'}", ["line 1", "DictComp"]),
        ("temperature = (t for t in ())", ["line 1", "GeneratorExp"]),
        ("temperature = 0.5\ntemperature += 0.1", ["line 2", "AugAssign"]),
        ("temperature[0] = 0.5", ["line 1", "single name"]),
        ("os.environ = 1", ["line 1", "single name"]),
        ("temperature = cache_kb = 0.5", ["line 1", "single name"]),
        ("temperature, cache_kb = 0.5, 1.0", ["line 1", "single name"]),
        ("temperature = 0.5\n\ntemperature = 0.6", ["line 3", "second assignment", "temperature"]),
        ("temperature: float = 0.5", ["line 1", "AnnAssign"]),
        ("def temperature():\n    pass", ["line 1", "FunctionDef"]),
        ("class Agent:\n    pass", ["line 1", "ClassDef"]),
        ("if True:\n    temperature = 0.5", ["line 1", "If"]),
        ("print('hi')", ["line 1", "Expr"]),
        ("exec('import os')", ["line 1", "Expr"]),
        ("temperature = (t := 0.5)", ["line 1", "NamedExpr"]),
        ("temperature = 0.25 + 0.25", ["line 1", "BinOp"]),
        ("temperature = --0.5", ["line 1", "UnaryOp"]),
        ("retrieval = -True", ["line 1", "UnaryOp"]),
        ("retrieval = not False", ["line 1", "UnaryOp"]),
        ("temperature = None", ["line 1", "Constant"]),
        ("temperature = b'0.5'", ["line 1", "Constant"]),
        ("temperature = 0.5j", ["line 1", "Constant"]),
        ("temperature = ...", ["line 1", "Constant"]),
        ("temperature = " + "[" * 100 + "]" * 100, ["line 1", "List"]),
        ("temperature = = 0.5", ["does not parse", "line 1"]),
        ("temperature = 0.5\ncache_kb = 1.0\nmemory = (", ["does not parse", "line 3"]),
        ("temperature = 0.5\x00", ["does not parse"]),
        ("temperature = " + "(" * 3000 + "0.5" + ")" * 3000, ["does not parse", "nested"]),
        ("temperature = " + "[" * 3000 + "]" * 3000, ["does not parse", "nested"]),
        ("temperature = " + "-" * 6000 + "0.5", ["does not parse"]),
        (b"temperature = 0.5\n# \xff\xfe", ["UTF-8"]),
        (b"architecture = '\xc3\x28'", ["UTF-8"]),
    ],
)
def test_forbidden_sources_are_refused_unexecuted(source: str | bytes, expected: list[str]):
    """Imports, calls, attributes, lambdas, comprehensions... are refused, naming line/construct."""
    assert len(source if isinstance(source, bytes) else source.encode()) <= LIMIT
    with pytest.raises(InvalidAgentCode) as info:
        parse_safely(source)
    for fragment in expected:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_call_in_gene_value_is_never_run(tmp_path: Path) -> None:
    """`__import__('os').system(...)` as a gene value is refused and never runs."""
    sentinel = tmp_path / "pwned"
    source = GOOD_SOURCE.replace(
        "temperature = 0.7", f"temperature = __import__('os').system('touch {sentinel}')"
    )
    assert "__import__" in source
    with pytest.raises(InvalidAgentCode, match=r"line \d+: a Call expression") as info:
        parse_safely(source)
    assert info.value.details["construct"] == "Call"
    assert not sentinel.exists()
    # And without any sentinel patched in place, still nothing runs.
    with pytest.raises(InvalidAgentCode, match="Call"):
        parse_agent_code(source, SPACE, max_bytes=LIMIT)
    assert not sentinel.exists()


@pytest.mark.parametrize("as_bytes", [False, True])
def test_oversized_source_is_a_constraint_violation(as_bytes: bool) -> None:
    """A 100 KB source is refused before parsing, naming its size and the limit."""
    source = GOOD_SOURCE + "#" * 100_000 + "\n"
    size = len(source.encode())
    payload: str | bytes = source.encode() if as_bytes else source
    with (
        pytest.raises(ConstraintViolation) as info,
        mock.patch("ast.parse", side_effect=AssertionError("parsed")),  # refused before parsing
    ):
        parse_safely(payload)
    assert str(size) in str(info.value)
    assert str(LIMIT) in str(info.value)
    assert info.value.details["size_bytes"] == size
    assert info.value.details["limit_bytes"] == LIMIT


def test_size_counts_utf8_bytes_not_characters() -> None:
    """The size limit counts UTF-8 bytes, so 4000 two-byte characters exceed 6656 bytes."""
    source = GOOD_SOURCE + "# " + "é" * 4000 + "\n"
    assert len(source) < LIMIT < len(source.encode())
    with pytest.raises(ConstraintViolation, match=str(len(source.encode()))):
        parse_safely(source)


@pytest.mark.parametrize(
    ("replace", "by", "gene"),
    [
        ("temperature = 0.7", "temperature = 5.0", "temperature"),
        ("temperature = 0.7", "temperature = 'hot'", "temperature"),
        ("parallelism = 4", "parallelism = 4.5", "parallelism"),
        ("architecture = 'transformer'", "architecture = 'cnn'", "architecture"),
        ("retrieval = True", "retrieval = 1", "retrieval"),
        ("memory = True\n", "", "memory"),
        ("memory = True", "memory = True\nbogus = 1", "bogus"),
    ],
)
def test_invalid_genome_names_the_gene(replace: str, by: str, gene: str) -> None:
    """Well-formed code stating an out-of-bounds, mistyped, missing or unknown gene is refused."""
    source = GOOD_SOURCE.replace(replace, by)
    assert source != GOOD_SOURCE
    with pytest.raises(InvalidAgentCode, match=gene):
        parse_safely(source)


def test_huge_integer_literal_is_invalid_agent_code() -> None:
    """An integer literal too large for a float is refused as InvalidAgentCode naming the gene."""
    source = GOOD_SOURCE.replace("context_window = 4096", "context_window = 1" + "0" * 400)
    with pytest.raises(InvalidAgentCode, match="context_window"):
        parse_safely(source)


@pytest.mark.parametrize("source", ["\ud800", "temperature = '\udfff'", GOOD_SOURCE + "#\ud83d"])
def test_text_with_lone_surrogates_is_invalid_agent_code(source: str) -> None:
    """Text that cannot be encoded as UTF-8 (lone surrogates) is refused as InvalidAgentCode."""
    with pytest.raises(InvalidAgentCode):
        parse_safely(source)


# -- fuzzing ------------------------------------------------------------------------------


def _check_outcome(source: str | bytes) -> None:
    """parse gives a valid row, or raises InvalidAgentCode / ConstraintViolation -- nothing else."""
    try:
        row = parse_safely(source)
    except (InvalidAgentCode, ConstraintViolation):
        return
    assert row.shape == (len(SPACE),)
    assert_valid_genes(SPACE, row[None, :])


FUZZ = settings(max_examples=300, deadline=None, database=None)


@FUZZ
@given(source=st.text())
@example(source=GOOD_SOURCE)
@example(source="")
@example(source='"""only a docstring"""')
def test_arbitrary_text_only_parses_or_is_refused(source: str) -> None:
    """Arbitrary text parses to a valid row or raises InvalidAgentCode/ConstraintViolation."""
    _check_outcome(source)


@FUZZ
@given(source=st.binary())
@example(source=GOOD_SOURCE.encode())
@example(source=b"\xff")
def test_arbitrary_bytes_only_parse_or_are_refused(source: bytes) -> None:
    """Arbitrary bytes either parse to a valid row or raise InvalidAgentCode/ConstraintViolation."""
    _check_outcome(source)


_targets = st.sampled_from([*SPACE.names, "x", "os", "__builtins__", "temperature[0]", "a, b"])
_operators = st.sampled_from([" = ", "=", " += ", ": float = ", " = -", " == "])
_values = st.one_of(
    st.floats().map(repr),
    st.integers().map(str),
    st.booleans().map(str),
    st.sampled_from(SPACE.genes[5].choices).map(repr),
    st.text(max_size=10).map(repr),
    st.sampled_from(
        ["__import__('os')", "os.path", "lambda: 0", "[1]", "--1", "1e999", "-0.0", "None", "("]
    ),
)
_lines = st.one_of(
    st.tuples(_targets, _operators, _values).map("".join),
    st.sampled_from(GOOD_SOURCE.splitlines()),
    st.text(max_size=20),
)


@FUZZ
@given(lines=st.lists(_lines, max_size=14))
def test_near_valid_sources_only_parse_or_are_refused(lines: list[str]) -> None:
    """Sources assembled from gene assignments and junk lines parse validly or are refused."""
    _check_outcome("\n".join(lines))
