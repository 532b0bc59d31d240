"""The decision service's logic: MAPE-K analysis, planning, knowledge, termination detection."""

from meshmind.decision._anomalies import AnalysisRules, Anomaly, AnomalyKind, Evidence, Situation
from meshmind.decision._knowledge import KnowledgeBase, Outcomes
from meshmind.decision._planning import ACTS_ON_HOST, CANDIDATES, Plan, Vote, judge, plan
from meshmind.decision._termination import DetectorError, Signal, TerminationDetector, Work

__all__ = [
    "ACTS_ON_HOST",
    "CANDIDATES",
    "AnalysisRules",
    "Anomaly",
    "AnomalyKind",
    "DetectorError",
    "Evidence",
    "KnowledgeBase",
    "Outcomes",
    "Plan",
    "Signal",
    "Situation",
    "TerminationDetector",
    "Vote",
    "Work",
    "judge",
    "plan",
]
