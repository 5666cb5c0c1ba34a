"""The evolution engine: genes, operators, problems, strategies, the Engine, alerts, code."""

from tdevlab.engine.adapters import CMAES, Nevergrad, OptunaSampler
from tdevlab.engine.alerts import AlertThresholds
from tdevlab.engine.engine import ControlEvent, Engine, EngineState
from tdevlab.engine.events import AgentUpdate, Alert, EvolutionUpdate, GenerationResult, LogEntry
from tdevlab.engine.ga import GeneticAlgorithm
from tdevlab.engine.genes import Categorical, Float, GeneSpace, Integer
from tdevlab.engine.lineage import GenomeDiff, Lineage
from tdevlab.engine.map_elites import MapElites
from tdevlab.engine.nsga2 import NSGA2
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
from tdevlab.engine.strategy import (
    Offspring,
    RunView,
    Scored,
    Strategy,
    make_strategy,
    strategy_names,
)
from tdevlab.engine.suites import ZDT1, ZDT2, ProjectedRastrigin

__all__ = [
    "CMAES",
    "NSGA2",
    "ZDT1",
    "ZDT2",
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
    "GeneticAlgorithm",
    "GenomeDiff",
    "Integer",
    "Lineage",
    "LogEntry",
    "MapElites",
    "Nevergrad",
    "Offspring",
    "OptunaSampler",
    "Parameters",
    "Problem",
    "ProjectedRastrigin",
    "Rastrigin",
    "RunView",
    "Scored",
    "Sphere",
    "Strategy",
    "make_problem",
    "make_strategy",
    "problem_names",
    "strategy_names",
]
