"""tdevlab: evolve agents with a vectorized genetic algorithm and watch it live.

The engine and stores import only numpy and msgspec; pandas and pyarrow are imported when
a dataset is exported or loaded.
"""

from __future__ import annotations

from typing import Any

from tdevlab.engine import (
    Ackley,
    AgentDesign,
    AgentUpdate,
    Alert,
    AlertThresholds,
    Categorical,
    ControlEvent,
    Engine,
    EngineState,
    Evaluation,
    EvolutionUpdate,
    Float,
    FunctionProblem,
    GenerationResult,
    GeneSpace,
    Integer,
    LogEntry,
    Parameters,
    Problem,
    Rastrigin,
    Sphere,
    make_problem,
    problem_names,
)
from tdevlab.engine.code import parse_agent_code, render_agent_code
from tdevlab.exceptions import (
    AgentNotFound,
    AuthFailed,
    ConnectionClosed,
    ConstraintViolation,
    DatasetError,
    EvaluationError,
    EvolutionFailed,
    GenerationNotFound,
    InvalidAgentCode,
    InvalidCommand,
    InvalidParameters,
    InvalidState,
    MissingExtra,
    RateLimited,
    RequestTimeout,
    RunNotFound,
    StoreError,
    TdevlabError,
    TdevlabWarning,
    Unauthorized,
    error_for_code,
)
from tdevlab.store import MemoryStore, SQLiteStore

__version__ = "0.1.0"

__all__ = [
    "Ackley",
    "AgentDesign",
    "AgentUpdate",
    "Alert",
    "AlertThresholds",
    "Categorical",
    "Comparison",
    "ControlEvent",
    "Engine",
    "EngineState",
    "Evaluation",
    "EvolutionUpdate",
    "Float",
    "FunctionProblem",
    "GeneSpace",
    "GenerationResult",
    "Integer",
    "LogEntry",
    "MemoryStore",
    "Parameters",
    "Problem",
    "RunDataset",
    "Rastrigin",
    "SQLiteStore",
    "Sphere",
    "compare",
    "export_run",
    "load_run",
    "make_problem",
    "parse_agent_code",
    "problem_names",
    "render_agent_code",
    "Client",
    "Dashboard",
    "LineageView",
    "SyncClient",
    "connect",
    "connect_sync",
    "AgentNotFound",
    "AuthFailed",
    "ConnectionClosed",
    "ConstraintViolation",
    "DatasetError",
    "EvaluationError",
    "EvolutionFailed",
    "GenerationNotFound",
    "InvalidAgentCode",
    "InvalidCommand",
    "InvalidParameters",
    "InvalidState",
    "MissingExtra",
    "RateLimited",
    "RequestTimeout",
    "RunNotFound",
    "StoreError",
    "TdevlabError",
    "TdevlabWarning",
    "Unauthorized",
    "error_for_code",
]


def __getattr__(name: str) -> Any:
    # pandas/pyarrow only when a dataset is touched; websockets/pandas only with a client.
    if name in ("export_run", "load_run", "RunDataset"):
        from tdevlab.store import export

        return getattr(export, name)
    if name in ("compare", "Comparison"):  # pandas; matplotlib only when a plot is drawn
        from tdevlab import comparison

        return getattr(comparison, name)
    if name in ("Client", "SyncClient", "connect", "connect_sync"):
        from tdevlab import client

        return getattr(client, name)
    if name == "Dashboard":  # ipywidgets and matplotlib only for the dashboard
        from tdevlab.notebook import Dashboard

        return Dashboard
    if name == "LineageView":  # ipywidgets and plotly only for the lineage view
        from tdevlab.notebook import LineageView

        return LineageView
    raise AttributeError(f"module 'tdevlab' has no attribute {name!r}")
