"""The evolution engine: genes, operators, problems, the Engine, alerts, agent code."""

from tdevlab.engine.alerts import AlertThresholds
from tdevlab.engine.engine import ControlEvent, Engine, EngineState
from tdevlab.engine.events import AgentUpdate, Alert, EvolutionUpdate, GenerationResult, LogEntry
from tdevlab.engine.genes import Categorical, Float, GeneSpace, Integer
from tdevlab.engine.params import Parameters
from tdevlab.engine.problems import (
    Ackley,
    AgentDesign,
    Evaluation,
    FunctionProblem,
    Problem,
    Rastrigin,
    Sphere,
    make_problem,
    problem_names,
)

__all__ = [
    "Ackley",
    "AgentDesign",
    "AgentUpdate",
    "Alert",
    "AlertThresholds",
    "Categorical",
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
    "Parameters",
    "Problem",
    "Rastrigin",
    "Sphere",
    "make_problem",
    "problem_names",
]
