"""Conversions between the pure decision types and the protocol's payloads; consensus keys."""

from __future__ import annotations

import hashlib
from typing import cast

from meshmind.bus.protocol import (
    AnomalyInfo,
    DecisionAction,
    DecisionRecord,
    EvidenceItem,
    VoteInfo,
    VoteReply,
    VoteRequest,
)
from meshmind.decision._anomalies import Anomaly, Evidence
from meshmind.decision._planning import Plan, Vote

KNOWLEDGE_KEY = "decision/knowledge"
"""The consensus key of the knowledge base every host plans from."""
ANOMALY_PREFIX = "decision/anomaly/"
"""Under ``decision/anomaly/<anomaly key>`` the one agreed decision of an anomaly is kept."""
MAX_NAME = 64


def anomaly_info(anomaly: Anomaly) -> AnomalyInfo:
    """The payload form of an anomaly."""
    return AnomalyInfo(
        kind=anomaly.kind,
        subject=anomaly.subject,
        episode=anomaly.episode,
        evidence=[
            EvidenceItem(observer=e.observer, what=e.what, at=e.at) for e in anomaly.evidence
        ],
    )


def anomaly_of(info: AnomalyInfo) -> Anomaly:
    """The pure form of an anomaly payload."""
    evidence = tuple(Evidence(e.observer, e.what, e.at) for e in info.evidence)
    return Anomaly(info.kind, info.subject, info.episode, evidence)


def vote_request(proposer: str, proposal: Plan) -> VoteRequest:
    """A proposal as other hosts are asked to judge it."""
    return VoteRequest(
        proposer=proposer,
        anomaly=anomaly_info(proposal.anomaly),
        action=cast(DecisionAction, proposal.action),
        target=proposal.target,
    )


def plan_of(request: VoteRequest) -> Plan:
    """The proposal a vote request carries."""
    return Plan(anomaly_of(request.anomaly), request.action, request.target, (request.action,))


def vote_info(vote: Vote | VoteReply) -> VoteInfo:
    """A vote as a decision record lists it."""
    return VoteInfo(voter=vote.voter, approve=vote.approve, reason=vote.reason)


def anomaly_key(record: DecisionRecord) -> str:
    """The consensus key a decision is committed under."""
    return ANOMALY_PREFIX + record.key


def short_name(name: str) -> str:
    """``name`` as an idempotency key of at most 64 characters (hashed when longer)."""
    if len(name) <= MAX_NAME:
        return name
    return "sha256-" + hashlib.sha256(name.encode()).hexdigest()[: MAX_NAME - 7]


def outcome_name(key: str) -> str:
    """The idempotency key of a decision's outcome entry in the log."""
    return short_name(f"outcome/{key}")


def takeover_name(key: str, departed: str) -> str:
    """The idempotency key of the log entry of a decision taken over from ``departed``."""
    return short_name(f"takeover/{key}/{departed}")
