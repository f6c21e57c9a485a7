"""Typed records with no heavy imports (pydantic only): the regression report, the gate's policy and decision, the
settings of a fine-tune and of the search. The command line reads and validates these without loading torch or
transformers; the modules that train and score (train, search, evaluate, probe, gate) build them and re-export them
under their old names."""

from skillgraft.schemas.gate import Check, Decision, GatePolicy
from skillgraft.schemas.report import BiasProbe, RegressionReport, SuiteRow, TaskScore
from skillgraft.schemas.training import DriftWatch, SearchConfig, TrainConfig

__all__ = [
    "BiasProbe",
    "Check",
    "Decision",
    "DriftWatch",
    "GatePolicy",
    "RegressionReport",
    "SearchConfig",
    "SuiteRow",
    "TaskScore",
    "TrainConfig",
]
