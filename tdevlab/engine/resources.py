"""What a run may cost: the population a memory budget affords, per strategy.

Every parameter change passes :func:`affordable` (called by the control owner), so no
``population_size`` or archive grid can make the engine allocate more than its budget
(``Engine(max_population_memory=...)``).
"""

from __future__ import annotations

from typing import Any

from tdevlab.engine.params import Parameters
from tdevlab.exceptions import InvalidParameters

__all__ = [
    "AGENT_BYTES",
    "DEFAULT_POPULATION_MEMORY",
    "WORKING_COPIES",
    "affordable",
    "population_limit",
]

#: Default of ``Engine(max_population_memory=...)``: 256 MiB.
DEFAULT_POPULATION_MEMORY = 256 * 1024 * 1024
#: Bytes per agent besides its genes: fitness, memory, speed, violation, id, two parents,
#: birth generation (8 bytes each) and status (1).
AGENT_BYTES = 8 * 8 + 1
#: Copies of a population's arrays alive while a generation is made (the current one,
#: offspring, candidates, crossover and mutation temporaries, scores, the snapshot written).
WORKING_COPIES = 8


def population_limit(strategy: Any, budget: int, genes: int) -> int:
    """The largest population ``budget`` bytes afford ``strategy`` over ``genes`` genes.

    Linear in the agents' bytes, unless the strategy's working memory grows faster and it
    says so with ``max_population_for(budget)`` (NSGA-II's dominance matrix).
    """
    top = max(2, budget // ((AGENT_BYTES + 8 * genes) * WORKING_COPIES))
    bound = getattr(strategy, "max_population_for", None)
    return top if bound is None else max(2, min(top, int(bound(budget))))


def affordable(params: Parameters, strategy: Any, budget: int, genes: int) -> Parameters:
    """``params`` if the budget affords them with ``strategy``.

    Raises:
        InvalidParameters: naming the bound: ``population_size`` over it
            (``details["maximum"]``), or an archive grid (``strategy.cells``) with more
            cells than the budget holds agents.
    """
    top = population_limit(strategy, budget, genes)
    if params.population_size > top:
        raise InvalidParameters(
            f"population_size={params.population_size} is over this engine's maximum of "
            f"{top} ({genes} genes, strategy {strategy.name!r}, within "
            f"max_population_memory={budget} bytes)",
            details={"parameter": "population_size", "value": params.population_size,
                     "maximum": top},
        )  # fmt: skip
    cells = getattr(strategy, "cells", None)  # an archive is a population of that size
    if isinstance(cells, int) and cells > top:
        raise InvalidParameters(
            f"the archive's {cells} cells could hold more agents than this engine's maximum "
            f"of {top}: use fewer bins or a larger max_population_memory",
            details={"parameter": "bins", "value": cells, "maximum": top},
        )
    return params
