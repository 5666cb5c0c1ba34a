"""Real-coded variation on whole arrays: SBX crossover and polynomial mutation (Deb).

The bounded forms NSGA-II uses (Deb & Agrawal 1995; Deb & Goyal 1996), as pymoo
implements them, over numeric genes in search space (log genes by their log); integer genes
are rounded afterwards, categorical genes are inherited from either parent and switched by
mutation as in :func:`tdevlab.engine.operators.mutate`. Every draw comes from the given
generator, a fixed number per call for given shapes.
"""

from __future__ import annotations

import numpy as np

from tdevlab.engine.genes import FloatArray, GeneSpace
from tdevlab.engine.operators import BoolArray, Mutation, bernoulli_cells

__all__ = ["polynomial_mutation", "sbx_crossover"]

_EPS = 1e-14


def sbx_crossover(
    rng: np.random.Generator,
    first: FloatArray,
    second: FloatArray,
    space: GeneSpace,
    *,
    crossover_rate: float = 0.9,
    eta: float = 15.0,
    gene_rate: float = 0.5,
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Simulated binary crossover of parent pairs; returns two children per pair.

    Args:
        first, second: ``(k, genes)`` parents.
        crossover_rate: Probability that a pair is crossed at all.
        eta: Distribution index (larger: children closer to their parents).
        gene_rate: Probability that a numeric gene of a crossed pair is recombined.

    Returns:
        (children of ``first``, children of ``second``, which pairs were crossed).
    """
    k, d = first.shape
    crossed: BoolArray = np.asarray(rng.random(k) < crossover_rate)
    u = rng.random((k, d))
    swap = rng.random((k, d)) < 0.5
    recombine = (rng.random((k, d)) < gene_rate) & crossed[:, None]
    a = space.to_search(first) if space.any_log else first.astype(np.float64, copy=True)
    b = space.to_search(second) if space.any_log else second.astype(np.float64, copy=True)
    low, high = space.search_low, space.search_high
    y1, y2 = np.minimum(a, b), np.maximum(a, b)
    delta = y2 - y1
    recombine &= delta > _EPS
    recombine[:, space.categorical_columns] = False
    safe = np.where(delta > _EPS, delta, 1.0)

    def spread(beta: FloatArray) -> FloatArray:
        alpha = 2.0 - np.power(beta, -(eta + 1.0))
        inside = u <= 1.0 / alpha
        with np.errstate(divide="ignore", invalid="ignore"):
            near = np.power(u * alpha, 1.0 / (eta + 1.0))
            far = np.power(1.0 / np.maximum(2.0 - u * alpha, _EPS), 1.0 / (eta + 1.0))
        return np.where(inside, near, far)

    c1 = 0.5 * ((y1 + y2) - spread(1.0 + 2.0 * (y1 - low) / safe) * delta)
    c2 = 0.5 * ((y1 + y2) + spread(1.0 + 2.0 * (high - y2) / safe) * delta)
    c1, c2 = np.where(swap, c2, c1), np.where(swap, c1, c2)
    child_a = np.where(recombine, c1, a)
    child_b = np.where(recombine, c2, b)
    if space.any_categorical:
        cols = space.categorical_columns
        take = swap[:, cols] & crossed[:, None]
        child_a[:, cols] = np.where(take, second[:, cols], first[:, cols])
        child_b[:, cols] = np.where(take, first[:, cols], second[:, cols])
    return space.from_search(child_a), space.from_search(child_b), crossed


def polynomial_mutation(
    rng: np.random.Generator,
    genes: FloatArray,
    space: GeneSpace,
    *,
    mutation_rate: float | None = None,
    eta: float = 20.0,
) -> tuple[FloatArray, Mutation]:
    """Bounded polynomial mutation of each gene with probability ``mutation_rate``.

    Args:
        genes: ``(k, genes)`` genomes (not modified).
        mutation_rate: Per-gene probability; ``None``: one over the number of genes.
        eta: Distribution index (larger: smaller steps).

    Returns:
        The mutated genomes and the mutated cells.
    """
    k, d = genes.shape
    rate = 1.0 / d if mutation_rate is None else mutation_rate
    cells = bernoulli_cells(rng, genes.size, rate)
    rows, columns = np.divmod(cells, d)
    r = rng.random(cells.size)
    out = genes.copy()
    flat = out.reshape(-1)
    old = flat[cells].copy()
    log = space.is_log[columns]
    x = np.where(log, np.log(np.where(log, old, 1.0)), old)
    low, high = space.search_low[columns], space.search_high[columns]
    span = high - low
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = np.where(span > 0, (x - low) / span, 0.0)
        d2 = np.where(span > 0, (high - x) / span, 0.0)
    power = 1.0 / (eta + 1.0)
    lower = r < 0.5
    xy = np.where(lower, 1.0 - d1, 1.0 - d2)
    val = np.where(
        lower,
        2.0 * r + (1.0 - 2.0 * r) * np.power(xy, eta + 1.0),
        2.0 * (1.0 - r) + 2.0 * (r - 0.5) * np.power(xy, eta + 1.0),
    )
    deltaq = np.where(lower, np.power(val, power) - 1.0, 1.0 - np.power(val, power))
    value = space.cells_from_search(columns, np.clip(x + deltaq * span, low, high))
    if space.any_categorical:
        cat = space.is_categorical[columns]
        choices = space.n_choices[columns[cat]]
        shift = 1 + np.floor(r[cat] * 2.0 % 1.0 * (choices - 1))
        value[cat] = np.mod(old[cat] + shift, choices)
    flat[cells] = value
    return out, Mutation(rows, columns, old, value)
