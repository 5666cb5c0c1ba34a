"""Problems: the AgentDesign model, the classic benchmarks, the function adapter, validation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdevlab.engine.genes import Categorical, Float, GeneSpace, Integer
from tdevlab.engine.problems import (
    Ackley,
    AgentDesign,
    Evaluation,
    FunctionProblem,
    Rastrigin,
    Sphere,
    check_evaluation,
    make_problem,
    problem_names,
)
from tdevlab.exceptions import EvaluationError, InvalidParameters
from tests.engine.test_genes import populations

DESIGN = AgentDesign()
SPACE = DESIGN.gene_space
MEMORY_LIMIT_KB = 6.5
SPEED_LIMIT_US = 3.0
FAST = settings(max_examples=50, deadline=None, database=None)
GOOD = {
    "learning_rate": 10**-3.5,
    "temperature": 0.55,
    "context_window": 2048,
    "cache_kb": 1.0,
    "parallelism": 4,
    "architecture": "transformer",
    "retrieval": True,
    "tool_use": False,
    "memory": False,
}


# -- AgentDesign --------------------------------------------------------------------------


@pytest.mark.slow
@FAST
@given(genes=populations(SPACE, max_rows=20))
def test_agent_design_is_deterministic(genes: np.ndarray) -> None:
    """The same genes always give the same outputs, from any AgentDesign instance."""
    before = genes.copy()
    first = DESIGN.evaluate(genes)
    second = DESIGN.evaluate(genes)
    third = AgentDesign().evaluate(genes.copy())
    for a, b, c in zip(first, second, third, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(genes, before)


@pytest.mark.slow
@FAST
@given(genes=populations(SPACE, max_rows=20), seed=st.integers(0, 2**32 - 1))
def test_agent_design_is_vectorized(genes: np.ndarray, seed: int) -> None:
    """Evaluating a batch equals evaluating each row alone, in any order."""
    batch = DESIGN.evaluate(genes)
    for row in range(genes.shape[0]):
        alone = DESIGN.evaluate(genes[row : row + 1])
        for label, batched, single in zip(Evaluation._fields, batch, alone, strict=True):
            assert single.shape == (1,)
            assert batched[row] == single[0], (label, row)
    order = np.random.default_rng(seed).permutation(genes.shape[0])
    shuffled = DESIGN.evaluate(genes[order])
    for batched, permuted in zip(batch, shuffled, strict=True):
        np.testing.assert_array_equal(batched[order], permuted)


@pytest.mark.slow
@FAST
@given(genes=populations(SPACE, max_rows=20))
def test_agent_design_outputs_are_in_range(genes: np.ndarray) -> None:
    """Fitness lies in [0, 1]; memory_kb and speed_us are finite and positive."""
    fitness, memory_kb, speed_us = check_evaluation(DESIGN.evaluate(genes), genes.shape[0])
    assert np.all((fitness >= 0.0) & (fitness <= 1.0))
    assert np.all(memory_kb > 0.0)
    assert np.all(speed_us > 0.0)


def test_agent_design_optimum_breaks_the_memory_limit() -> None:
    """The fittest of 20 000 random designs mostly exceed 6.5 KB, though feasible ones exist."""
    genes = SPACE.random(np.random.default_rng(2026), 20_000)
    fitness, memory_kb, speed_us = DESIGN.evaluate(genes)
    top = np.argsort(-fitness)[: genes.shape[0] // 100]
    assert (memory_kb[top] > MEMORY_LIMIT_KB).mean() >= 0.8
    assert memory_kb[np.argmax(fitness)] > MEMORY_LIMIT_KB
    feasible = (memory_kb <= MEMORY_LIMIT_KB) & (speed_us <= SPEED_LIMIT_US)
    assert feasible.sum() > 1000
    assert fitness[feasible].max() > 0.4
    assert fitness[feasible].max() < fitness.max()


def test_agent_design_is_multimodal_in_temperature() -> None:
    """Sweeping temperature with the other genes fixed shows several local maxima."""
    temperature = np.linspace(0.0, 2.0, 2001)
    genes = np.repeat(SPACE.encode(GOOD)[None, :], temperature.size, axis=0)
    genes[:, SPACE.index["temperature"]] = temperature
    fitness = DESIGN.evaluate(genes).fitness
    inner = fitness[1:-1]
    maxima = np.flatnonzero((inner > fitness[:-2]) & (inner > fitness[2:])) + 1
    assert maxima.size >= 2, temperature[maxima]
    # The global best is one of them, and the others are strictly worse.
    assert np.argmax(fitness) in maxima
    assert np.sum(fitness[maxima] < fitness.max()) >= 1


def test_agent_design_capabilities_cost_memory_and_time() -> None:
    """Turning on a capability raises both memory_kb and speed_us."""
    base = SPACE.encode({**GOOD, "retrieval": False, "tool_use": False, "memory": False})
    for capability in ("retrieval", "tool_use", "memory"):
        more = base.copy()
        more[SPACE.index[capability]] = 1.0
        _, memory_kb, speed_us = DESIGN.evaluate(np.stack([base, more]))
        assert memory_kb[1] > memory_kb[0], capability
        assert speed_us[1] > speed_us[0], capability


def test_agent_design_roles_and_registry() -> None:
    """AgentDesign is the 'agent_design' problem and its roles are the architecture index."""
    problem = make_problem("agent_design")
    assert isinstance(problem, AgentDesign)
    assert problem.name == "agent_design"
    genes = SPACE.random(np.random.default_rng(0), 50)
    roles = DESIGN.roles(genes)
    np.testing.assert_array_equal(roles, genes[:, SPACE.index["architecture"]])
    assert set(roles.tolist()) <= set(range(len(DESIGN.role_names)))


# -- benchmarks ---------------------------------------------------------------------------

BENCHMARKS = [Sphere, Rastrigin, Ackley]


@pytest.mark.parametrize("problem_class", BENCHMARKS)
@pytest.mark.parametrize("dims", [1, 2, 3, 10, 57])
def test_benchmarks_reach_fitness_one_at_the_origin(problem_class: Any, dims: int) -> None:
    """Sphere, Rastrigin and Ackley score exactly 1 = 1/(1+0) at the origin, in any dimension."""
    problem = problem_class(dims)
    assert len(problem.gene_space) == dims
    evaluation = problem.evaluate(np.zeros((3, dims)))
    np.testing.assert_array_equal(evaluation.fitness, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(evaluation.memory_kb, np.zeros(3))
    np.testing.assert_array_equal(evaluation.speed_us, np.zeros(3))


@pytest.mark.parametrize("problem_class", BENCHMARKS)
@pytest.mark.parametrize("dims", [1, 4, 20])
def test_benchmarks_fitness_is_below_one_elsewhere(problem_class: Any, dims: int) -> None:
    """Away from the origin benchmark fitness is in (0, 1); bounds are symmetric."""
    problem = problem_class(dims)
    np.testing.assert_array_equal(problem.gene_space.low, -problem.bound)
    np.testing.assert_array_equal(problem.gene_space.high, problem.bound)
    genes = problem.gene_space.random(np.random.default_rng(dims), 500)
    fitness = check_evaluation(problem.evaluate(genes), 500).fitness
    assert np.all((fitness > 0.0) & (fitness < 1.0))


def test_benchmark_known_values() -> None:
    """Sphere(1, 2) = 5 and Rastrigin(1, 0) = 1 give fitness 1/6 and 1/2."""
    point = np.array([[1.0, 2.0]])
    assert Sphere(2).evaluate(point).fitness[0] == pytest.approx(1 / 6)
    assert Rastrigin(2).evaluate(np.array([[1.0, 0.0]])).fitness[0] == pytest.approx(0.5)
    assert Ackley(2).bound == pytest.approx(32.768)


@pytest.mark.parametrize("name", ["sphere", "rastrigin", "ackley"])
def test_make_problem_builds_benchmarks_with_config(name: str) -> None:
    """make_problem(name, dims=d) builds the benchmark with that name and config."""
    problem = make_problem(name, dims=4)
    assert problem.name == name
    assert len(problem.gene_space) == 4
    assert problem.config == {"dims": 4}
    rebuilt = make_problem(name, **problem.config)
    assert rebuilt.gene_space == problem.gene_space


@pytest.mark.parametrize("dims", [0, -1, 2.5, "3", None, math.nan, math.inf, "abc"])
def test_invalid_benchmark_dims_raise_invalid_parameters(dims: Any) -> None:
    """Non-positive, fractional, non-numeric or non-finite dims raise InvalidParameters."""
    with pytest.raises(InvalidParameters, match="dims|sphere"):
        make_problem("sphere", dims=dims)


def test_make_problem_unknown_name_lists_the_names() -> None:
    """An unknown problem name raises InvalidParameters listing every built-in problem."""
    with pytest.raises(InvalidParameters, match="nope") as info:
        make_problem("nope")
    for name in problem_names():
        assert name in str(info.value)
    assert problem_names() == sorted(
        ["agent_design", "sphere", "rastrigin", "ackley", "zdt1", "zdt2", "projected_rastrigin"]
    )


def test_make_problem_unexpected_argument_is_invalid_parameters() -> None:
    """A keyword the problem does not take raises InvalidParameters naming the problem."""
    with pytest.raises(InvalidParameters, match="agent_design"):
        make_problem("agent_design", dims=3)


# -- FunctionProblem ----------------------------------------------------------------------

GENES = [
    Float("x", -1.0, 1.0),
    Integer("n", 1, 5),
    Categorical("mode", ("fast", "slow")),
    Categorical("flag", (False, True)),
]
ROWS = np.array([[0.5, 3.0, 1.0, 0.0], [-0.25, 1.0, 0.0, 1.0], [0.0, 5.0, 1.0, 1.0]])


def test_function_problem_float_returning() -> None:
    """A number-returning function gives the fitness; costs are zero; genomes are decoded."""
    seen: list[dict[str, Any]] = []

    def function(genome: dict[str, Any]) -> float:
        seen.append(genome)
        return genome["x"] * genome["n"]

    problem = FunctionProblem(function, GENES)
    fitness, memory_kb, speed_us = problem.evaluate(ROWS)
    np.testing.assert_array_equal(fitness, [1.5, -0.25, 0.0])
    np.testing.assert_array_equal(memory_kb, np.zeros(3))
    np.testing.assert_array_equal(speed_us, np.zeros(3))
    assert seen[0] == {"x": 0.5, "n": 3, "mode": "slow", "flag": False}
    assert [type(v) for v in seen[1].values()] == [float, int, str, bool]


@pytest.mark.parametrize("value", [3, np.float32(3.0), np.int64(3), 3.0])
def test_function_problem_accepts_numeric_types(value: Any) -> None:
    """ints and numpy scalars are accepted as fitness."""
    problem = FunctionProblem(lambda genome: value, GeneSpace(GENES))
    np.testing.assert_array_equal(problem.evaluate(ROWS).fitness, [3.0, 3.0, 3.0])


def test_function_problem_dict_returning() -> None:
    """A dict-returning function gives fitness and costs; missing costs count as 0."""

    def function(genome: dict[str, Any]) -> dict[str, float]:
        if genome["flag"]:
            return {"fitness": genome["x"], "memory_kb": 2.0 * genome["n"], "speed_us": 0.5}
        return {"fitness": 1.0}

    fitness, memory_kb, speed_us = FunctionProblem(function, GENES, name="mine").evaluate(ROWS)
    np.testing.assert_array_equal(fitness, [1.0, -0.25, 0.0])
    np.testing.assert_array_equal(memory_kb, [0.0, 2.0, 10.0])
    np.testing.assert_array_equal(speed_us, [0.0, 0.5, 0.5])


def test_function_problem_raising_function_is_evaluation_error() -> None:
    """A raising function gives EvaluationError with the exception type, text and row."""

    def function(genome: dict[str, Any]) -> float:
        if genome["n"] == 1:
            raise ZeroDivisionError("division by the number of workers")
        return 0.0

    with pytest.raises(EvaluationError) as info:
        FunctionProblem(function, GENES).evaluate(ROWS)
    message = str(info.value)
    assert "division by the number of workers" in message
    assert "ZeroDivisionError" in message
    assert "row 1" in message
    assert info.value.details["row"] == 1
    assert isinstance(info.value.__cause__, ZeroDivisionError)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [("0.5", "str"), (None, "NoneType"), (True, "bool"), ([0.5], "list")],
)
def test_function_problem_non_number_is_evaluation_error(value: Any, type_name: str) -> None:
    """Returning a string, None, a bool or a list gives EvaluationError naming the type."""
    with pytest.raises(EvaluationError, match=type_name) as info:
        FunctionProblem(lambda genome: value, GENES).evaluate(ROWS)
    assert "row 0" in str(info.value)


def test_function_problem_dict_without_fitness_is_evaluation_error() -> None:
    """A dict without 'fitness' gives EvaluationError saying so."""
    with pytest.raises(EvaluationError, match="'fitness'"):
        FunctionProblem(lambda genome: {"memory_kb": 1.0}, GENES).evaluate(ROWS)


@pytest.mark.parametrize(
    "value",
    [{"fitness": "high"}, {"fitness": None}, {"fitness": 1.0, "memory_kb": "big"}],
)
def test_function_problem_dict_with_non_numbers_is_evaluation_error(value: Any) -> None:
    """A dict whose fitness or costs are not numbers gives EvaluationError naming the row."""
    with pytest.raises(EvaluationError, match="row 0"):
        FunctionProblem(lambda genome: value, GENES).evaluate(ROWS)


def test_function_problem_nan_is_caught_by_check_evaluation() -> None:
    """A NaN fitness passes through evaluate and check_evaluation names its agent."""
    problem = FunctionProblem(lambda genome: math.nan if genome["n"] == 5 else 0.0, GENES)
    with pytest.raises(EvaluationError, match="agent-12"):
        check_evaluation(problem.evaluate(ROWS), 3, np.array([10, 11, 12]))


# -- check_evaluation ---------------------------------------------------------------------


def test_check_evaluation_returns_float_arrays() -> None:
    """Valid results (lists, ints) come back as float64 arrays in an Evaluation."""
    evaluation = check_evaluation(([1, 0.5], [2, 3], (0.1, 0.2)), 2)
    assert isinstance(evaluation, Evaluation)
    for array in evaluation:
        assert isinstance(array, np.ndarray)
        assert array.dtype == np.float64
        assert array.shape == (2,)
    np.testing.assert_array_equal(evaluation.memory_kb, [2.0, 3.0])


@pytest.mark.parametrize("result", [[np.zeros(2)] * 3, np.zeros((3, 2)), (np.zeros(2),) * 2, None])
def test_check_evaluation_needs_a_triple(result: Any) -> None:
    """Anything but a (fitness, memory_kb, speed_us) tuple raises EvaluationError."""
    with pytest.raises(EvaluationError, match="fitness, memory_kb, speed_us"):
        check_evaluation(result, 2)


@pytest.mark.parametrize("label", ["fitness", "memory_kb", "speed_us"])
@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((4, 1)), np.float64(0.0), np.zeros(5)])
def test_check_evaluation_wrong_shape_names_the_array(label: str, bad: Any) -> None:
    """A wrongly shaped array raises EvaluationError naming it, its shape and the expected one."""
    arrays = {name: np.zeros(4) for name in Evaluation._fields}
    arrays[label] = bad
    with pytest.raises(EvaluationError) as info:
        check_evaluation(tuple(arrays.values()), 4)
    message = str(info.value)
    assert label in message
    assert str(np.shape(bad)) in message
    assert "(4,)" in message


@pytest.mark.parametrize("label", ["fitness", "memory_kb", "speed_us"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_evaluation_non_finite_names_array_and_agent(label: str, bad: float) -> None:
    """NaN or infinite values raise EvaluationError naming the array and the first bad agent."""
    arrays = {name: np.ones(4) for name in Evaluation._fields}
    arrays[label] = np.array([0.0, 1.0, bad, bad])
    result = tuple(arrays.values())
    with pytest.raises(EvaluationError) as info:
        check_evaluation(result, 4, np.array([40, 41, 42, 43]))
    assert label in str(info.value)
    assert "agent-42" in str(info.value)
    assert info.value.details["row"] == 2
    with pytest.raises(EvaluationError, match="row 2"):
        check_evaluation(result, 4)


def test_check_evaluation_non_numeric_values_are_evaluation_error() -> None:
    """Non-numeric values in an array raise EvaluationError naming the array."""
    with pytest.raises(EvaluationError, match="fitness"):
        check_evaluation((["good", "bad"], [1.0, 1.0], [1.0, 1.0]), 2)
