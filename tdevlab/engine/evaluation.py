"""Evaluating a batch of genomes: through the evaluator, timed, with errors that name the agent."""

from __future__ import annotations

import time

import numpy as np

from tdevlab.engine.agents import agent_id
from tdevlab.engine.distributed import Evaluator
from tdevlab.engine.genes import FloatArray
from tdevlab.engine.problems import Evaluation, Problem, check_evaluation
from tdevlab.exceptions import EvaluationError

__all__ = ["evaluate_batch"]


def evaluate_batch(
    evaluator: Evaluator, problem: Problem, genes: FloatArray, first_id: int, generation: int
) -> tuple[Evaluation, float]:
    """Evaluate ``genes`` (agents ``first_id``, ``first_id + 1``, ...) for ``generation``.

    Returns:
        The checked evaluation and the milliseconds it took.

    Raises:
        EvaluationError: naming the agent (``details["agent_id"]``) when the problem's error
            names a row, and the generation; any other exception of the problem becomes one.
    """
    started = time.perf_counter()
    ids = np.arange(first_id, first_id + genes.shape[0])
    try:
        raw = evaluator.evaluate(problem, genes, first_id)
    except EvaluationError as exc:
        row = exc.details.get("row")
        if row is not None and "agent_id" not in exc.details:
            exc.details["agent_id"] = agent_id(first_id + int(row))
            exc.message = f"{exc.message} [{agent_id(first_id + int(row))}]"
            exc.args = (exc.message,)
        exc.details.setdefault("generation", generation)
        raise
    except Exception as exc:
        raise EvaluationError(
            f"{type(problem).__name__}.evaluate failed: {type(exc).__name__}: {exc}",
            details={"reason": f"{type(exc).__name__}: {exc}", "generation": generation},
        ) from exc
    return check_evaluation(raw, genes.shape[0], ids), (time.perf_counter() - started) * 1000.0
