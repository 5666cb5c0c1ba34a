"""Property tests of the vectorized genetic operators over random gene spaces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tdevlab.engine import operators as ops
from tdevlab.engine.genes import GeneSpace
from tests.engine.test_genes import assert_valid_genes, gene_spaces, populations

FAST = settings(max_examples=60, deadline=None, database=None)
seeds = st.integers(0, 2**32 - 1)
rates = st.floats(0.0, 1.0)
# The extremes explicitly, then any rate: tiny and subnormal ones included.
mutation_rates = st.one_of(st.just(0.0), st.just(1.0), rates)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@st.composite
def parent_pairs(draw: st.DrawFn) -> tuple[GeneSpace, np.ndarray, np.ndarray]:
    """Draw a gene space and two equally sized parent matrices of it."""
    space = draw(gene_spaces())
    first = draw(populations(space))
    second = np.array(
        [draw(populations(space, max_rows=1))[0] for _ in range(first.shape[0])]
    ).reshape(first.shape)
    return space, first, second


def _scores(size: int) -> st.SearchStrategy[np.ndarray]:
    """Scores with many ties (drawn from a small set) or arbitrary finite floats."""
    tied = st.integers(-3, 3).map(float)
    wide = st.floats(-1e6, 1e6)
    return hnp.arrays(np.float64, size, elements=st.one_of(tied, wide))


# -- constraint_violation ----------------------------------------------------------------


@FAST
@given(
    memory=hnp.arrays(np.float64, st.integers(0, 30), elements=st.floats(0.0, 100.0)),
    memory_limit=st.floats(0.1, 50.0),
    speed_limit=st.floats(0.1, 50.0),
    seed=seeds,
)
def test_constraint_violation_is_total_relative_excess(
    memory: np.ndarray, memory_limit: float, speed_limit: float, seed: int
) -> None:
    """Violation has one entry per agent, is 0 iff within both limits, else the summed excess."""
    speed = _rng(seed).uniform(0.0, 100.0, memory.size)
    violation = ops.constraint_violation(memory, speed, memory_limit, speed_limit)
    assert violation.shape == memory.shape
    assert np.all(violation >= 0.0)
    within = (memory <= memory_limit) & (speed <= speed_limit)
    np.testing.assert_array_equal(violation == 0.0, within)
    expected = np.maximum(memory / memory_limit - 1, 0) + np.maximum(speed / speed_limit - 1, 0)
    np.testing.assert_allclose(violation, expected, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(
        violation, ops.constraint_violation(memory, speed, memory_limit, speed_limit)
    )


def test_constraint_violation_example_from_docstring() -> None:
    """7.15 KB against a 6.5 KB limit is a violation of 0.1; excesses add up."""
    violation = ops.constraint_violation(
        np.array([7.15, 7.15, 6.5]), np.array([3.0, 6.0, 3.0]), 6.5, 3.0
    )
    np.testing.assert_allclose(violation, [0.1, 1.1, 0.0])


# -- selection_score / rank_order / elite_indices -----------------------------------------


@st.composite
def fitness_and_violation(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Draw fitness in a realistic range and violations that are 0 (feasible) or positive."""
    n = draw(st.integers(1, 40))
    fitness = draw(hnp.arrays(np.float64, n, elements=st.floats(-1e3, 1e3)))
    violation = draw(
        hnp.arrays(np.float64, n, elements=st.one_of(st.just(0.0), st.floats(1e-6, 1e3)))
    )
    return fitness, violation


@FAST
@given(arrays=fitness_and_violation())
def test_selection_score_is_feasibility_first(arrays: tuple[np.ndarray, np.ndarray]) -> None:
    """Feasible agents beat infeasible ones; feasible by fitness, others by violation, fitness."""
    fitness, violation = arrays
    score = ops.selection_score(fitness, violation)
    assert score.shape == fitness.shape
    feasible = violation == 0.0
    n = score.size
    si, sj = np.broadcast_to(score[:, None], (n, n)), np.broadcast_to(score[None, :], (n, n))
    fi, fj = feasible[:, None], feasible[None, :]
    # Feasible above infeasible, strictly.
    assert np.all(si[fi & ~fj] > sj[fi & ~fj])
    # Among feasible agents a higher fitness scores strictly higher.
    feasible_pair = fi & fj
    fit_i, fit_j = fitness[:, None], fitness[None, :]
    assert np.all(si[feasible_pair & (fit_i > fit_j)] > sj[feasible_pair & (fit_i > fit_j)])
    # Among infeasible agents a smaller violation scores strictly higher; at equal
    # violation, a higher fitness does.
    both = ~fi & ~fj
    vi, vj = violation[:, None], violation[None, :]
    smaller = both & (vi < vj)
    assert np.all(si[smaller] > sj[smaller])
    tie_better = both & (vi == vj) & (fit_i > fit_j)
    assert np.all(si[tie_better] > sj[tie_better])
    np.testing.assert_array_equal(score, ops.selection_score(fitness.copy(), violation.copy()))


@FAST
@given(fitness=hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(-1e3, 1e3)))
def test_selection_score_all_feasible_is_fitness(fitness: np.ndarray) -> None:
    """Without violations the selection score is exactly the fitness."""
    score = ops.selection_score(fitness, np.zeros_like(fitness))
    np.testing.assert_array_equal(score, fitness)


def test_selection_score_feasible_first_with_large_fitness() -> None:
    """A feasible agent outranks an infeasible one even when fitness values are large."""
    fitness = np.array([1e16, 1e16])
    violation = np.array([0.5, 0.0])  # agent 0 breaks a limit, agent 1 is feasible
    score = ops.selection_score(fitness, violation)
    assert score[1] > score[0], score
    assert ops.rank_order(score)[0] == 1
    assert ops.elite_indices(score, 1)[0] == 1


@FAST
@given(score=_scores(st.integers(1, 40)))
def test_rank_order_sorts_best_first_with_stable_ties(score: np.ndarray) -> None:
    """rank_order is a permutation, best first, with equal scores kept in index order."""
    order = ops.rank_order(score)
    assert order.shape == score.shape
    assert sorted(order.tolist()) == list(range(score.size))
    ranked = score[order]
    assert np.all(ranked[:-1] >= ranked[1:])
    ties = ranked[:-1] == ranked[1:]
    assert np.all(order[:-1][ties] < order[1:][ties])
    np.testing.assert_array_equal(order, ops.rank_order(score.copy()))


@FAST
@given(score=_scores(st.integers(1, 40)), count=st.integers(-2, 45))
def test_elite_indices_keep_the_best(score: np.ndarray, count: int) -> None:
    """elite_indices returns the count best agents, best first, its first an argmax."""
    elites = ops.elite_indices(score, count)
    k = min(max(count, 0), score.size)
    assert elites.shape == (k,)
    assert np.issubdtype(elites.dtype, np.integer)
    assert len(set(elites.tolist())) == k
    assert np.all((elites >= 0) & (elites < score.size))
    if k:
        assert score[elites[0]] == score.max()
    best_k = np.sort(score)[::-1][:k]
    np.testing.assert_array_equal(score[elites], best_k)
    np.testing.assert_array_equal(elites, ops.elite_indices(score.copy(), count))


# -- tournament_select --------------------------------------------------------------------


@FAST
@given(
    score=_scores(st.integers(1, 30)),
    n=st.integers(0, 40),
    size=st.integers(1, 8),
    seed=seeds,
)
def test_tournament_select_returns_valid_reproducible_indices(
    score: np.ndarray, n: int, size: int, seed: int
) -> None:
    """tournament_select gives n valid indices, identical for generators of the same seed."""
    winners = ops.tournament_select(_rng(seed), score, n, size)
    assert winners.shape == (n,)
    assert np.issubdtype(winners.dtype, np.integer)
    assert np.all((winners >= 0) & (winners < score.size))
    np.testing.assert_array_equal(winners, ops.tournament_select(_rng(seed), score, n, size))


@FAST
@given(score=_scores(st.integers(1, 20)), n=st.integers(1, 30), seed=seeds)
def test_large_tournaments_pick_the_best(score: np.ndarray, n: int, seed: int) -> None:
    """With a huge tournament every winner has the best score."""
    winners = ops.tournament_select(_rng(seed), score, n, 500)
    assert np.all(score[winners] == score.max())


def test_tournament_of_one_is_uniform() -> None:
    """With tournament_size=1 every agent is picked about equally often, whatever its score."""
    score = np.arange(10.0)
    winners = ops.tournament_select(_rng(11), score, 20_000, 1)
    counts = np.bincount(winners, minlength=10)
    assert np.all(np.abs(counts - 2000) < 200), counts


def test_larger_tournaments_raise_selection_pressure() -> None:
    """Bigger tournaments pick better agents on average."""
    score = np.arange(50.0)
    means = [
        score[ops.tournament_select(_rng(3), score, 5000, size)].mean() for size in (1, 2, 4, 8)
    ]
    assert means == sorted(means)
    assert means[0] < means[-1] - 10


# -- uniform_crossover --------------------------------------------------------------------


@pytest.mark.slow
@FAST
@given(pair=parent_pairs(), rate=rates, seed=seeds)
def test_uniform_crossover_takes_each_gene_from_a_parent(
    pair: tuple[GeneSpace, np.ndarray, np.ndarray], rate: float, seed: int
) -> None:
    """Children have the parents' shape, each gene from one parent; uncrossed = first parent."""
    space, first, second = pair
    child, crossed = ops.uniform_crossover(_rng(seed), first, second, rate)
    assert child.shape == first.shape
    assert crossed.shape == (first.shape[0],)
    assert crossed.dtype == np.bool_
    assert np.all((child == first) | (child == second))
    np.testing.assert_array_equal(child[~crossed], first[~crossed])
    assert_valid_genes(space, child)
    again, crossed_again = ops.uniform_crossover(_rng(seed), first, second, rate)
    np.testing.assert_array_equal(child, again)
    np.testing.assert_array_equal(crossed, crossed_again)


@FAST
@given(pair=parent_pairs(), seed=seeds)
def test_uniform_crossover_rate_extremes(
    pair: tuple[GeneSpace, np.ndarray, np.ndarray], seed: int
) -> None:
    """crossover_rate=0 copies the first parent; crossover_rate=1 crosses every pair."""
    _, first, second = pair
    child, crossed = ops.uniform_crossover(_rng(seed), first, second, 0.0)
    np.testing.assert_array_equal(child, first)
    assert not crossed.any()
    child, crossed = ops.uniform_crossover(_rng(seed), first, second, 1.0)
    assert crossed.all()
    assert np.all((child == first) | (child == second))


def test_uniform_crossover_mixes_both_parents() -> None:
    """Crossed children take about half their genes from each parent."""
    first, second = np.zeros((400, 10)), np.ones((400, 10))
    child, crossed = ops.uniform_crossover(_rng(1), first, second, 1.0)
    assert crossed.all()
    assert 0.45 < child.mean() < 0.55


# -- blend_crossover ----------------------------------------------------------------------


@pytest.mark.slow
@FAST
@given(pair=parent_pairs(), rate=rates, alpha=st.floats(0.0, 1.0), seed=seeds)
def test_blend_crossover_respects_bounds(
    pair: tuple[GeneSpace, np.ndarray, np.ndarray], rate: float, alpha: float, seed: int
) -> None:
    """Blended children stay valid; categorical genes come from a parent; uncrossed = first."""
    space, first, second = pair
    child, crossed = ops.blend_crossover(_rng(seed), first, second, rate, space, alpha)
    assert child.shape == first.shape
    assert crossed.shape == (first.shape[0],)
    assert_valid_genes(space, child)
    cat = space.is_categorical
    assert np.all((child[:, cat] == first[:, cat]) | (child[:, cat] == second[:, cat]))
    np.testing.assert_array_equal(child[~crossed], first[~crossed])
    # Inputs are left untouched.
    assert_valid_genes(space, first)
    again, crossed_again = ops.blend_crossover(_rng(seed), first, second, rate, space, alpha)
    np.testing.assert_array_equal(child, again)
    np.testing.assert_array_equal(crossed, crossed_again)


@pytest.mark.slow
@FAST
@given(pair=parent_pairs(), alpha=st.floats(0.0, 1.0), seed=seeds)
def test_blend_crossover_stays_in_the_widened_interval(
    pair: tuple[GeneSpace, np.ndarray, np.ndarray], alpha: float, seed: int
) -> None:
    """Plain float genes land within the parents' interval widened by alpha on each side."""
    space, first, second = pair
    child, _ = ops.blend_crossover(_rng(seed), first, second, 1.0, space, alpha)
    plain = space.is_numeric & ~space.is_log & ~space.is_integer
    lo = np.minimum(first, second)[:, plain]
    hi = np.maximum(first, second)[:, plain]
    slack = alpha * (hi - lo) + 1e-9 * (1 + np.abs(hi) + np.abs(lo))
    assert np.all(child[:, plain] >= lo - slack)
    assert np.all(child[:, plain] <= hi + slack)


@FAST
@given(pair=parent_pairs(), seed=seeds)
def test_blend_crossover_rate_zero_copies_first_parent(
    pair: tuple[GeneSpace, np.ndarray, np.ndarray], seed: int
) -> None:
    """crossover_rate=0 returns exact copies of the first parent."""
    space, first, second = pair
    child, crossed = ops.blend_crossover(_rng(seed), first, second, 0.0, space)
    np.testing.assert_array_equal(child, first)
    assert not crossed.any()


def test_blend_crossover_categorical_takes_either_parent() -> None:
    """Categorical genes are inherited from each parent about half the time, never blended."""
    space = GeneSpace.from_description(
        [{"name": "arch", "kind": "categorical", "choices": ["a", "b", "c", "d"]}]
    )
    first, second = np.zeros((2000, 1)), np.full((2000, 1), 3.0)
    child, crossed = ops.blend_crossover(_rng(2), first, second, 1.0, space)
    assert crossed.all()
    assert set(np.unique(child)) == {0.0, 3.0}
    assert 0.45 < (child == 3.0).mean() < 0.55


# -- random_bits / bernoulli_cells --------------------------------------------------------


@FAST
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=20), seed=seeds)
def test_random_bits_shape_and_reproducibility(shape: tuple[int, ...], seed: int) -> None:
    """random_bits gives a bool array of the asked shape, identical for equal seeds."""
    bits = ops.random_bits(_rng(seed), shape)
    assert bits.shape == shape
    assert bits.dtype == np.bool_
    np.testing.assert_array_equal(bits, ops.random_bits(_rng(seed), shape))


def test_random_bits_are_fair_coins() -> None:
    """About half of many random bits are set, in every position."""
    bits = ops.random_bits(_rng(8), (4000, 9))
    assert 0.48 < bits.mean() < 0.52
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.04)


@FAST
@given(n_cells=st.integers(0, 500), rate=mutation_rates, seed=seeds)
def test_bernoulli_cells_are_sorted_valid_indices(n_cells: int, rate: float, seed: int) -> None:
    """bernoulli_cells gives sorted, unique flat indices in [0, n_cells), same for equal seeds."""
    cells = ops.bernoulli_cells(_rng(seed), n_cells, rate)
    assert cells.ndim == 1
    assert np.issubdtype(cells.dtype, np.integer)
    assert np.all((cells >= 0) & (cells < n_cells))
    assert np.all(np.diff(cells) > 0)
    np.testing.assert_array_equal(cells, ops.bernoulli_cells(_rng(seed), n_cells, rate))
    if rate == 0.0:
        assert cells.size == 0
    if rate == 1.0:
        np.testing.assert_array_equal(cells, np.arange(n_cells))


@pytest.mark.parametrize("rate", [0.001, 0.05, 0.5, 0.9])
def test_bernoulli_cells_hit_each_cell_with_the_rate(rate: float) -> None:
    """Each cell is chosen with probability rate, independently of its position."""
    n_cells, trials = 200, 400
    hits = np.zeros(n_cells)
    rng = _rng(17)
    for _ in range(trials):
        hits[ops.bernoulli_cells(rng, n_cells, rate)] += 1
    draws = n_cells * trials
    spread = 5.0 * np.sqrt(draws * rate * (1.0 - rate))  # five standard deviations
    assert abs(hits.sum() - draws * rate) < spread
    assert abs(hits[: n_cells // 2].sum() - hits[n_cells // 2 :].sum()) < spread


@pytest.mark.parametrize("rate", [1e-19, 1e-20, 1e-30, 1e-300, 5e-324])
def test_tiny_rates_give_valid_cells(rate: float) -> None:
    """A tiny (but valid) rate gives sorted in-range cells, not int64-overflowed positions."""
    cells = ops.bernoulli_cells(_rng(0), 10, rate)
    assert np.all((cells >= 0) & (cells < 10)), cells
    assert np.all(np.diff(cells) > 0), cells


@pytest.mark.parametrize("seed", [0, 1])
def test_mutate_with_tiny_rate_is_valid(seed: int) -> None:
    """mutation_rate=1e-19 (within [0, 1]) mutates validly: almost surely nothing changes."""
    space = GeneSpace.from_description(
        [
            {"name": "x", "kind": "float", "low": 0.0, "high": 1.0, "log": False},
            {"name": "n", "kind": "int", "low": 0, "high": 9, "log": False},
        ]
    )
    genes = space.random(_rng(1), 5)
    out, record = ops.mutate(_rng(seed), genes, 1e-19, 0.1, space)
    _assert_record_matches(genes, out, record)
    np.testing.assert_array_equal(out, genes)


# -- mutate -------------------------------------------------------------------------------


def _assert_record_matches(genes: np.ndarray, out: np.ndarray, record: ops.Mutation) -> None:
    """The Mutation cells are exactly where out may differ from genes, with old/new values."""
    rows, columns, old, new = record
    assert rows.shape == columns.shape == old.shape == new.shape
    assert rows.dtype == np.int64
    assert columns.dtype == np.int64
    assert len(set(zip(rows.tolist(), columns.tolist(), strict=True))) == rows.size
    np.testing.assert_array_equal(genes[rows, columns], old)
    np.testing.assert_array_equal(out[rows, columns], new)
    touched = np.zeros(genes.shape, dtype=bool)
    touched[rows, columns] = True
    np.testing.assert_array_equal(out[~touched], genes[~touched])
    assert np.all(touched[out != genes])


@FAST
@given(
    data=st.data(),
    rate=mutation_rates,
    sigma=st.floats(0.0, 2.0),
    seed=seeds,
)
def test_mutate_respects_bounds_and_reports_cells(
    data: st.DataObject, rate: float, sigma: float, seed: int
) -> None:
    """Mutants stay valid, the Mutation record matches the change, same seed same mutants."""
    space = data.draw(gene_spaces())
    genes = data.draw(populations(space))
    before = genes.copy()
    out, record = ops.mutate(_rng(seed), genes, rate, sigma, space)
    np.testing.assert_array_equal(genes, before)  # input untouched
    assert out.shape == genes.shape
    assert_valid_genes(space, out)
    _assert_record_matches(genes, out, record)
    cat_cells = space.is_categorical[record.columns]
    assert np.all(record.new[cat_cells] != record.old[cat_cells])
    out2, record2 = ops.mutate(_rng(seed), genes, rate, sigma, space)
    np.testing.assert_array_equal(out, out2)
    for a, b in zip(record, record2, strict=True):
        np.testing.assert_array_equal(a, b)


@FAST
@given(data=st.data(), sigma=st.floats(0.0, 2.0), seed=seeds)
def test_mutate_rate_zero_changes_nothing(data: st.DataObject, sigma: float, seed: int) -> None:
    """mutation_rate=0 returns the genes unchanged and reports no cell."""
    space = data.draw(gene_spaces())
    genes = data.draw(populations(space))
    out, record = ops.mutate(_rng(seed), genes, 0.0, sigma, space)
    np.testing.assert_array_equal(out, genes)
    assert all(array.size == 0 for array in record)


@pytest.mark.slow
@FAST
@given(data=st.data(), rate=mutation_rates, sigma=st.floats(0.0, 2.0), seed=seeds)
def test_mutate_inplace_matches_copy(
    data: st.DataObject, rate: float, sigma: float, seed: int
) -> None:
    """inplace=True mutates and returns the given matrix, exactly as the copying mutate does."""
    space = data.draw(gene_spaces())
    genes = data.draw(populations(space))
    expected, expected_record = ops.mutate(_rng(seed), genes, rate, sigma, space)
    for target in (genes.copy(), np.asfortranarray(genes)):
        before = target.copy()
        out, record = ops.mutate(_rng(seed), target, rate, sigma, space, inplace=True)
        assert out is target
        np.testing.assert_array_equal(out, expected)
        _assert_record_matches(before, out, record)
        for a, b in zip(record, expected_record, strict=True):
            np.testing.assert_array_equal(a, b)


@FAST
@given(data=st.data(), sigma=st.floats(0.0, 2.0), seed=seeds)
def test_mutate_rate_one_reports_every_cell(data: st.DataObject, sigma: float, seed: int) -> None:
    """mutation_rate=1 reports every cell, and every categorical gene changes its choice."""
    space = data.draw(gene_spaces())
    genes = data.draw(populations(space))
    out, record = ops.mutate(_rng(seed), genes, 1.0, sigma, space)
    assert record.rows.size == genes.size
    touched = np.zeros(genes.shape, dtype=bool)
    touched[record.rows, record.columns] = True
    assert touched.all()
    cat = space.is_categorical
    assert np.all(out[:, cat] != genes[:, cat])
    assert_valid_genes(space, out)
    _assert_record_matches(genes, out, record)


def test_mutate_categorical_switch_is_uniform_over_other_choices() -> None:
    """A categorical mutation picks each of the other choices about equally often."""
    space = GeneSpace.from_description(
        [{"name": "c", "kind": "categorical", "choices": ["a", "b", "c", "d"]}]
    )
    out, _ = ops.mutate(_rng(9), np.zeros((6000, 1)), 1.0, 0.1, space)
    counts = np.bincount(out[:, 0].astype(np.int64), minlength=4)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] - 2000) < 200), counts


@pytest.mark.parametrize("sigma", [0.01, 0.1])
def test_mutate_noise_scales_with_sigma(sigma: float) -> None:
    """Gaussian noise on a float gene has a spread of sigma times the gene's span."""
    space = GeneSpace.from_description(
        [{"name": "x", "kind": "float", "low": -100.0, "high": 100.0, "log": False}]
    )
    out, _ = ops.mutate(_rng(4), np.zeros((5000, 1)), 1.0, sigma, space)
    assert abs(out.std() / (sigma * 200.0) - 1.0) < 0.05


def test_mutate_does_not_overflow_on_non_log_genes() -> None:
    """Mutating large non-log genes next to a log gene raises no floating-point overflow."""
    space = GeneSpace.from_description(
        [
            {"name": "rate", "kind": "float", "low": 1e-5, "high": 1e-1, "log": True},
            {"name": "size", "kind": "float", "low": 0.0, "high": 1e6, "log": False},
        ]
    )
    genes = np.array([[1e-3, 5e5], [1e-2, 9e5]])
    with np.errstate(over="raise"):
        out, _ = ops.mutate(_rng(0), genes, 1.0, 0.1, space)
    assert_valid_genes(space, out)


@FAST
@given(data=st.data(), sigma=st.floats(0.0, 2.0), seed=seeds, inplace=st.booleans())
def test_mutate_every_cell_is_the_cell_by_cell_mutation(
    data: st.DataObject, sigma: float, seed: int, inplace: bool
) -> None:
    """At rate 1 the whole-row path gives exactly the genes and record the cell path gives
    for every cell (log, integer and categorical genes included), leaving the input alone
    unless in place."""
    space = data.draw(gene_spaces())
    genes = data.draw(populations(space))
    cells = np.arange(genes.size, dtype=np.int64)
    expected, expected_record = ops._mutate_cells(
        _rng(seed), genes.copy(), cells, sigma, space, False
    )
    target = genes.copy()
    out, record = ops.mutate(_rng(seed), target, 1.0, sigma, space, inplace=inplace)
    np.testing.assert_array_equal(out, expected)
    assert (out is target) == inplace
    if not inplace:
        np.testing.assert_array_equal(target, genes)
        assert not np.shares_memory(out, record.new)
    for a, b in zip(record, expected_record, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
