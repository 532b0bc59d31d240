"""The decision service's logic: MAPE-K analysis, planning, knowledge, agreement, actuators,
and termination detection for diffusing computations."""

from meshmind.bus.protocol import AnomalyKind
from meshmind.decision._actuators import (
    ActuatorMode,
    Actuators,
    CommandRunner,
    ConsensusControl,
    LabControl,
    SubprocessRunner,
    host_commands,
)
from meshmind.decision._anomalies import AnalysisRules, Anomaly, Evidence, Situation
from meshmind.decision._engine import (
    DecisionEngine,
    DecisionPorts,
    EngineSettings,
    NotAgreed,
    parse_knowledge,
    quorum,
)
from meshmind.decision._knowledge import KnowledgeBase, Outcomes
from meshmind.decision._planning import (
    ACTS_ON_HOST,
    CANDIDATES,
    LINK_ACTIONS,
    Plan,
    Vote,
    judge,
    plan,
)
from meshmind.decision._sweep import Sweeper, SweepTransport
from meshmind.decision._termination import DetectorError, Signal, TerminationDetector, Work
from meshmind.decision._wire import (
    ANOMALY_PREFIX,
    KNOWLEDGE_KEY,
    anomaly_info,
    anomaly_of,
    short_name,
)

__all__ = [
    "ACTS_ON_HOST",
    "ANOMALY_PREFIX",
    "CANDIDATES",
    "KNOWLEDGE_KEY",
    "LINK_ACTIONS",
    "ActuatorMode",
    "Actuators",
    "AnalysisRules",
    "Anomaly",
    "AnomalyKind",
    "CommandRunner",
    "ConsensusControl",
    "DecisionEngine",
    "DecisionPorts",
    "DetectorError",
    "EngineSettings",
    "Evidence",
    "KnowledgeBase",
    "LabControl",
    "NotAgreed",
    "Outcomes",
    "Plan",
    "Signal",
    "Situation",
    "SubprocessRunner",
    "SweepTransport",
    "Sweeper",
    "TerminationDetector",
    "Vote",
    "Work",
    "anomaly_info",
    "anomaly_of",
    "host_commands",
    "judge",
    "parse_knowledge",
    "plan",
    "quorum",
    "short_name",
]
