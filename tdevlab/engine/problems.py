"""Problems: what the engine optimizes.

A problem has a :class:`GeneSpace` and evaluates a whole batch of genomes at once,
returning fitness (higher is better), ``memory_kb`` and ``speed_us`` arrays. The engine
checks the constraints (memory and speed limits) itself.

* :class:`AgentDesign` (the default) models the agents of the API: a deterministic,
  multimodal score with gene interactions and explicit memory and latency cost models,
  whose unconstrained optimum breaks the memory limit.
* :class:`Sphere`, :class:`Rastrigin`, :class:`Ackley`: classic benchmarks in any dimension,
  minimized; their fitness is ``1 / (1 + f(x))`` so it lies in ``(0, 1]``.
* :class:`FunctionProblem` adapts a plain per-agent function.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from tdevlab.engine.genes import Categorical, Float, FloatArray, GeneSpace, GeneValue, Integer
from tdevlab.exceptions import EvaluationError, InvalidParameters

__all__ = [
    "Ackley",
    "AgentDesign",
    "Evaluation",
    "FunctionProblem",
    "Problem",
    "Rastrigin",
    "Sphere",
    "check_evaluation",
    "make_problem",
    "problem_names",
]


class Evaluation(NamedTuple):
    """A batch evaluation: one entry per genome, in input order."""

    fitness: FloatArray
    memory_kb: FloatArray
    speed_us: FloatArray


@runtime_checkable
class Problem(Protocol):
    """What the engine needs from a problem.

    ``name`` identifies a built-in problem in stored runs; ``config`` holds the arguments
    that rebuild it with :func:`make_problem`. ``role_names`` and ``roles`` give agents
    their readable names (``NL_Input_Agent_v42``).
    """

    name: str
    gene_space: GeneSpace

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """Evaluate a ``(n, len(gene_space))`` matrix."""
        ...


def check_evaluation(result: Any, n: int, first_agent_ids: Any = None) -> Evaluation:
    """Validate what a problem returned for ``n`` genomes and return it as float arrays.

    Raises:
        EvaluationError: naming the array, the expected shape, or the first agent row
            holding a NaN or infinite value.
    """
    if not isinstance(result, tuple) or len(result) != 3:
        raise EvaluationError(
            "a problem's evaluate() must return (fitness, memory_kb, speed_us) arrays, "
            f"got {type(result).__name__}"
        )
    arrays = []
    for label, values in zip(Evaluation._fields, result, strict=True):
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise EvaluationError(
                f"evaluate() returned non-numeric {label}: {exc}",
                details={"reason": f"non-numeric {label}"},
            ) from exc
        if array.shape != (n,):
            raise EvaluationError(
                f"evaluate() returned {label} of shape {array.shape}, expected ({n},)",
                details={"reason": f"{label} has shape {array.shape}"},
            )
        if not np.isfinite(array).all():
            row = int(np.flatnonzero(~np.isfinite(array))[0])
            agent = None if first_agent_ids is None else f"agent-{int(first_agent_ids[row])}"
            raise EvaluationError(
                f"evaluate() returned {label}={array[row]} for {agent or f'row {row}'}",
                details={"reason": f"non-finite {label}", "agent_id": agent, "row": row},
            )
        arrays.append(array)
    return Evaluation(*arrays)


class AgentDesign:
    """The default problem: design an agent that is good, small and fast.

    Genes (in the spirit of the API's agents): ``learning_rate`` (log), ``temperature``,
    ``context_window`` (log int), ``cache_kb``, ``parallelism``, ``architecture``, and three
    capabilities (``retrieval``, ``tool_use``, ``memory``).

    Fitness (0..1) multiplies a quality term and a throughput term:

    * quality: the learning rate has an architecture-specific sweet spot (a gaussian in
      log space), the temperature a ripple of local optima around its best value, the
      context window saturating returns that depend on the architecture, and each
      capability a bonus that grows with context (retrieval needs room to read);
    * throughput: parallelism helps by Amdahl's law, minus a coordination cost.

    Cost models:

    * ``memory_kb`` = architecture base + context window × bytes per token + cache +
      per-worker state × parallelism + capability footprints;
    * ``speed_us`` = architecture latency × context factor / cache speed-up / parallel
      speed-up + capability latencies + coordination overhead.

    The fittest unconstrained designs (large contexts, every capability) need about 9 KB,
    over the default 6.5 KB limit, so the constraint shapes the answer.
    """

    name = "agent_design"
    role_names = ("NL_Input", "Sequence", "Reasoning", "Router")

    _ARCHITECTURES = ("mlp", "rnn", "transformer", "mixture")
    # Per architecture: best log10(learning rate), context benefit, base memory (KB),
    # base latency (us), bytes per context token.
    _LR_BEST = np.array([-2.0, -2.5, -3.5, -3.0])
    _CTX_GAIN = np.array([0.35, 0.55, 1.0, 0.85])
    _BASE_KB = np.array([0.6, 1.0, 1.6, 2.0])
    _BASE_US = np.array([0.6, 1.1, 1.4, 1.2])
    _BYTES_PER_TOKEN = np.array([0.05, 0.08, 0.12, 0.10])
    _QUALITY_CAP = np.array([0.70, 0.78, 0.95, 0.90])

    def __init__(self) -> None:
        self.gene_space = GeneSpace(
            [
                Float("learning_rate", 1e-5, 1e-1, log=True),
                Float("temperature", 0.0, 2.0),
                Integer("context_window", 256, 32768, log=True),
                Float("cache_kb", 0.0, 4.0),
                Integer("parallelism", 1, 16),
                Categorical("architecture", self._ARCHITECTURES),
                Categorical("retrieval", (False, True)),
                Categorical("tool_use", (False, True)),
                Categorical("memory", (False, True)),
            ]
        )
        self.config: dict[str, Any] = {}

    def roles(self, genes: FloatArray) -> np.ndarray:
        """Return each agent's role index (its architecture) for naming."""
        return genes[:, self.gene_space.index["architecture"]].astype(np.int64)

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """Score a batch of designs; see the class docstring for the model."""
        ix = self.gene_space.index
        lr = genes[:, ix["learning_rate"]]
        temp = genes[:, ix["temperature"]]
        ctx = genes[:, ix["context_window"]]
        cache = genes[:, ix["cache_kb"]]
        par = genes[:, ix["parallelism"]]
        arch = genes[:, ix["architecture"]].astype(np.int64)
        retrieval = genes[:, ix["retrieval"]]
        tool_use = genes[:, ix["tool_use"]]
        memory = genes[:, ix["memory"]]

        # Quality ---------------------------------------------------------------------------
        q_lr = np.exp(-(((np.log10(lr) - self._LR_BEST[arch]) / 0.6) ** 2))
        # Best temperature rises with tool use (exploration pays when tools check answers);
        # the cosine adds local optima every 0.25 around it.
        t_best = 0.55 + 0.35 * tool_use
        dt = temp - t_best
        q_temp = (0.8 + 0.2 * np.cos(8.0 * np.pi * dt)) * np.exp(-((dt / 0.7) ** 2))
        ctx_level = np.log2(ctx / 256.0) / 7.0  # 0 at 256 tokens, 1 at 32768
        q_ctx = 0.45 + 0.55 * (1.0 - np.exp(-3.0 * self._CTX_GAIN[arch] * ctx_level))
        capabilities = (
            0.10 * retrieval * (0.4 + 0.6 * ctx_level)  # retrieval needs room to read
            + 0.07 * tool_use
            + 0.05 * memory * (1.0 + 0.5 * (arch == 1))  # recurrent agents use memory best
        )
        quality = self._QUALITY_CAP[arch] * q_lr * q_temp * q_ctx + capabilities

        # Throughput: Amdahl speed-up with a coordination cost per worker.
        speedup = 1.0 / (0.25 + 0.75 / par)
        throughput = np.minimum(speedup / 4.0, 1.0) - 0.012 * (par - 1)
        fitness = np.clip(quality * (0.55 + 0.45 * throughput) / 1.12, 0.0, 1.0)

        # Costs -----------------------------------------------------------------------------
        memory_kb = (
            self._BASE_KB[arch]
            + ctx * self._BYTES_PER_TOKEN[arch] / 1024.0 * 8.0
            + cache
            + 0.12 * par
            + 0.9 * retrieval
            + 0.4 * tool_use
            + 0.7 * memory
        )
        cache_speedup = 1.0 + 0.35 * np.sqrt(cache)
        speed_us = (
            self._BASE_US[arch] * (0.6 + 0.4 * ctx_level * 2.0) / cache_speedup / np.sqrt(speedup)
            + 0.35 * retrieval
            + 0.25 * tool_use
            + 0.10 * memory
            + 0.04 * par
        )
        return Evaluation(fitness, memory_kb, speed_us)


class _Benchmark(ABC):
    """Shared parts of the classic minimization benchmarks."""

    name = "benchmark"
    bound = 5.12
    role_names = ("Benchmark",)

    def __init__(self, dims: int = 10) -> None:
        if isinstance(dims, bool) or not isinstance(dims, int | np.integer) or dims < 1:
            raise InvalidParameters(f"dims must be a positive integer, got {dims!r}")
        self.dims = int(dims)
        self.gene_space = GeneSpace(
            [Float(f"x{i}", -self.bound, self.bound) for i in range(self.dims)]
        )
        self.config: dict[str, Any] = {"dims": self.dims}

    @abstractmethod
    def objective(self, x: FloatArray) -> FloatArray:
        """Return the value to minimize for each row of ``x``."""

    def roles(self, genes: FloatArray) -> np.ndarray:
        return np.zeros(genes.shape[0], dtype=np.int64)

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """Fitness ``1 / (1 + f(x))``; no memory or speed cost (always feasible)."""
        fitness = 1.0 / (1.0 + self.objective(genes))
        zeros = np.zeros(genes.shape[0])
        return Evaluation(fitness, zeros, zeros)


class Sphere(_Benchmark):
    """``f(x) = sum(x_i^2)`` on ``[-5.12, 5.12]^dims``; minimum 0 at the origin."""

    name = "sphere"

    def objective(self, x: FloatArray) -> FloatArray:
        return np.asarray(np.einsum("ij,ij->i", x, x), dtype=np.float64)


class Rastrigin(_Benchmark):
    """``f(x) = 10 d + sum(x_i^2 - 10 cos(2 pi x_i))``; highly multimodal, minimum 0 at 0."""

    name = "rastrigin"

    def objective(self, x: FloatArray) -> FloatArray:
        # The cosine dominates: compute it in place and sum rows with einsum (no temporaries).
        c = np.multiply(x, 2.0 * np.pi)
        np.cos(c, out=c)
        total = np.einsum("ij,ij->i", x, x) - 10.0 * np.einsum("ij->i", c)
        return np.asarray(10.0 * x.shape[1] + total, dtype=np.float64)


class Ackley(_Benchmark):
    """Ackley's function on ``[-32.768, 32.768]^dims``; minimum 0 at the origin."""

    name = "ackley"
    bound = 32.768

    def objective(self, x: FloatArray) -> FloatArray:
        d = x.shape[1]
        a = -20.0 * np.exp(-0.2 * np.sqrt(np.einsum("ij,ij->i", x, x) / d))
        b = -np.exp(np.sum(np.cos(2.0 * np.pi * x), axis=1) / d)
        # (a + 20) + (b + e) is exactly 0 at the origin; a + b + 20 + e rounds to 4e-16.
        return np.asarray(np.maximum((a + 20.0) + (b + np.e), 0.0), dtype=np.float64)


class FunctionProblem:
    """Adapt a per-agent function to the batch interface.

    Args:
        function: Called with one ``{gene name: value}`` dict per agent; returns either the
            fitness (a number) or a dict with ``fitness`` and optionally ``memory_kb`` and
            ``speed_us`` (missing costs count as 0).
        gene_space: The genes, or a list of them.
        name: A label stored with runs.

    Raises:
        EvaluationError: when the function raises or returns something else, naming the
            agent row and the reason (the engine adds the agent id).
    """

    role_names = ("Custom",)

    def __init__(
        self,
        function: Callable[[dict[str, GeneValue]], float | Mapping[str, float]],
        gene_space: GeneSpace | list[Float | Integer | Categorical],
        name: str = "custom",
    ) -> None:
        self.function = function
        self.gene_space = gene_space if isinstance(gene_space, GeneSpace) else GeneSpace(gene_space)
        self.name = name
        self.config: dict[str, Any] = {}

    def roles(self, genes: FloatArray) -> np.ndarray:
        return np.zeros(genes.shape[0], dtype=np.int64)

    def evaluate(self, genes: FloatArray) -> Evaluation:
        """Call the function once per row (the one per-agent loop, by the user's choice)."""
        n = genes.shape[0]
        out = np.zeros((3, n))
        for row in range(n):
            genome = self.gene_space.decode(genes[row])
            try:
                value = self.function(genome)
            except Exception as exc:
                raise EvaluationError(
                    f"fitness function raised {type(exc).__name__}: {exc} (row {row})",
                    details={"reason": f"{type(exc).__name__}: {exc}", "row": row},
                ) from exc
            if isinstance(value, Mapping):
                if "fitness" not in value:
                    raise EvaluationError(
                        f"fitness function returned a dict without 'fitness' (row {row})",
                        details={"reason": "missing fitness", "row": row},
                    )
                out[0, row] = _number(value["fitness"], "fitness", row)
                out[1, row] = _number(value.get("memory_kb", 0.0), "memory_kb", row)
                out[2, row] = _number(value.get("speed_us", 0.0), "speed_us", row)
            elif _is_number(value):
                out[0, row] = value
            else:
                raise EvaluationError(
                    f"fitness function returned {type(value).__name__}, expected a number "
                    f"or a dict (row {row})",
                    details={"reason": f"returned {type(value).__name__}", "row": row},
                )
        return Evaluation(out[0], out[1], out[2])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)


def _number(value: Any, label: str, row: int) -> float:
    if not _is_number(value):
        raise EvaluationError(
            f"fitness function returned {label}={value!r}, expected a number (row {row})",
            details={"reason": f"{label} is {type(value).__name__}", "row": row},
        )
    return float(value)


_REGISTRY: dict[str, Callable[..., Any]] = {
    "agent_design": AgentDesign,
    "sphere": Sphere,
    "rastrigin": Rastrigin,
    "ackley": Ackley,
}


def register_problem(name: str, factory: Callable[..., Any]) -> None:
    """Make ``make_problem(name, **config)`` build a problem with ``factory(**config)``."""
    _REGISTRY[name] = factory


def problem_names() -> list[str]:
    """Return the names of the built-in problems."""
    return sorted(_REGISTRY)


def make_problem(name: str, **config: Any) -> Problem:
    """Build a built-in problem by name (``agent_design``, ``sphere``, ``rastrigin``, ``ackley``).

    Raises:
        InvalidParameters: for an unknown name or invalid arguments.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise InvalidParameters(
            f"unknown problem {name!r}; built-in problems are {problem_names()}"
        ) from None
    try:
        problem: Problem = factory(**config)
    except TypeError as exc:
        raise InvalidParameters(f"problem {name!r}: {exc}") from exc
    return problem
