"""Pure views of the consensus group for meshctl: status, members, decisions and keys."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from meshmind.bus.protocol import (
    ConsensusMember,
    ConsensusStatus,
    DecisionList,
    KvEntryInfo,
    KvWrite,
)
from meshmind.ctl._views import natural_key, titled_table

ROLE_STYLES = {"leader": "bold green", "follower": "", "candidate": "yellow"}
MISSING = "-"


def role_text(role: str) -> Text:
    """A role, the leader's in bold green and an election's in yellow."""
    return Text(role, style=ROLE_STYLES.get(role, "yellow"))


def sorted_statuses(statuses: Sequence[ConsensusStatus]) -> list[ConsensusStatus]:
    """Statuses in natural order of their host."""
    return sorted(statuses, key=lambda status: natural_key(status.node))


def status_table(statuses: Sequence[ConsensusStatus]) -> Table:
    """Each host's view of the group: role, term, leader, how far its log is committed and
    applied, how many voters and learners it knows, and the Raft messages it refused."""
    table = titled_table(f"consensus on {len(statuses)} host(s)")
    for column in ("host", "backend", "role"):
        table.add_column(column)
    table.add_column("term", justify="right")
    table.add_column("leader")
    for column in ("commit", "applied", "voters", "learners", "refused"):
        table.add_column(column, justify="right")
    for status in sorted_statuses(statuses):
        voters = sum(1 for member in status.members if member.voter)
        table.add_row(
            status.node,
            status.backend,
            role_text(status.role),
            str(status.term),
            status.leader or MISSING,
            str(status.commit_index),
            str(status.applied_index),
            str(voters),
            str(len(status.members) - voters),
            str(sum(status.rejected.values())),
        )
    return table


def sorted_members(members: Sequence[ConsensusMember]) -> list[ConsensusMember]:
    """Voters first, then learners, each in natural order."""
    return sorted(members, key=lambda member: (not member.voter, natural_key(member.node)))


def members_table(status: ConsensusStatus) -> Table:
    """The group's members as ``status``'s host sees them: voter or learner, the leader marked,
    and how far each one's log matches the leader's (known to the leader only)."""
    leader = status.leader or "unknown"
    table = titled_table(
        f"members as {status.node} sees them (leader {leader}, term {status.term})"
    )
    table.add_column("node")
    table.add_column("role")
    table.add_column("match", justify="right")
    for member in sorted_members(status.members):
        leads = member.node == status.leader
        role = "voter, leader" if leads else "voter" if member.voter else "learner"
        table.add_row(
            member.node,
            Text(role, style=ROLE_STYLES["leader"] if leads else ""),
            MISSING if member.match_index is None else str(member.match_index),
        )
    return table


def leader_line(status: ConsensusStatus) -> str:
    """``n2 leads in term 4 (as n1 sees it)``."""
    return f"{status.leader} leads in term {status.term} (as {status.node} sees it)"


def utc_time(at: float) -> str:
    """A Unix time as UTC, to the millisecond."""
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def decisions_table(page: DecisionList) -> Table:
    """A page of the decision log, in order: sequence, time, idempotency key, record."""
    table = titled_table(f"{len(page.decisions)} decision(s) of {page.last_seq}")
    table.add_column("seq", justify="right")
    table.add_column("at (UTC)")
    table.add_column("idempotency key")
    table.add_column("record", overflow="fold")
    for decision in page.decisions:
        table.add_row(
            str(decision.seq), utc_time(decision.at), decision.idempotency_key, decision.record
        )
    return table


def entry_line(entry: KvEntryInfo) -> str:
    """A key as read: its value and revision, its lease holder, or that it has no value."""
    if entry.value is None:
        return f"{entry.key}: no value"
    lease = f", leased by {entry.lease}" if entry.lease else ""
    return f"{entry.key} = {entry.value!r} (revision {entry.revision}{lease})"


def write_line(verb: str, write: KvWrite) -> str:
    """The outcome of a write, as an operator reads it."""
    if write.ok:
        if write.value is None:
            return f"{write.key}: {verb}"
        return f"{write.key} = {write.value!r} (revision {write.revision})"
    if write.value is None:
        return f"{write.key}: not {verb}, it has no value"
    return f"{write.key}: not {verb}, it holds {write.value!r} (revision {write.revision})"
