"""The decision service's logic: MAPE-K analysis, planning, knowledge, termination detection."""

from meshmind.decision._termination import DetectorError, Signal, TerminationDetector, Work

__all__ = ["DetectorError", "Signal", "TerminationDetector", "Work"]
