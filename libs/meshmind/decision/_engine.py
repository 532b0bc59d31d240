"""The MAPE-K loop of one host: monitor, analyse, plan, agree (votes and a consensus cas),
execute once, and learn from the outcome. Its I/O goes through :class:`DecisionPorts`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from meshmind.bus import ServiceError, get_logger
from meshmind.bus.protocol import (
    AnomalyKind,
    DecisionAck,
    DecisionEvent,
    DecisionEventKind,
    DecisionList,
    DecisionRecord,
    FlRoundMetrics,
    KvCas,
    KvEntryInfo,
    KvWrite,
    LinkChange,
    PeerChange,
    VoteReply,
    VoteRequest,
)
from meshmind.decision._anomalies import LINK_KINDS, AnalysisRules, Anomaly, Situation
from meshmind.decision._knowledge import KnowledgeBase
from meshmind.decision._planning import Plan, Vote, judge, plan
from meshmind.decision._wire import (
    ANOMALY_PREFIX,
    KNOWLEDGE_KEY,
    anomaly_info,
    anomaly_of,
    outcome_name,
    plan_of,
    short_name,
    takeover_name,
    vote_info,
    vote_request,
)

_log = get_logger(__name__)

KNOWLEDGE_CAS_ATTEMPTS = 20
TAKEOVER_WINDOW = 200
"""How many of the newest log entries are searched for a departed executor's decisions."""
STORE_ATTEMPTS = 30
"""Tries of a takeover's reads and cas while the store is unavailable, ``retry_s`` apart."""
STORE_UNAVAILABLE = frozenset({503, 504})
T = TypeVar("T")
MAX_EVIDENCE_TEXT = 512
SEEN_ALIKE: frozenset[AnomalyKind] = frozenset({"host-gone", "trainer-failing"})
"""Anomalies every host finds in the same events: proposed unless decided already."""


class DecisionPorts(Protocol):
    """What the loop needs of the mesh: the other hosts' votes, the consensus store and log,
    its own events, and the actuators."""

    async def vote(self, peer: str, request: VoteRequest, timeout_s: float) -> VoteReply: ...

    async def get(self, key: str) -> KvEntryInfo: ...

    async def cas(self, request: KvCas) -> KvWrite: ...

    async def put(self, key: str, value: str) -> KvWrite: ...

    async def append(self, record: str, idempotency_key: str) -> DecisionAck: ...

    async def log(self, after: int, limit: int) -> DecisionList: ...

    async def publish(self, event: DecisionEvent) -> None: ...

    async def act(self, record: DecisionRecord) -> str: ...


@dataclass(frozen=True)
class EngineSettings:
    """Timing of the loop (each is a setting of the decision service)."""

    vote_timeout_s: float = 1.0
    retry_s: float = 0.5
    """A proposal without a quorum of approvals is put to the vote again after this."""
    detect_deadline_s: float = 15.0
    """How long a detected anomaly is proposed before it is given up."""
    settle_s: float = 2.0
    """A link anomaly is planned this long after it is seen, once the other links' reports
    have come in, so the planner knows which end of it is at fault."""
    stagger_s: float = 0.3
    """Hosts that detect the same anomaly propose one after another, this far apart."""
    outcome_s: float = 20.0
    """The anomaly must clear within this long after the action to count as a success."""
    knowledge_cache_s: float = 1.0
    promote_within_s: float = 600.0
    """A voter demoted behind a bad link is promoted back once its links recover, within this."""
    rules: AnalysisRules = field(default_factory=AnalysisRules)


def quorum(members: int) -> int:
    """Approvals needed: a majority of the membership, the proposer counted."""
    return members // 2 + 1


class NotAgreed(ServiceError):
    """No quorum of approvals before the deadline (409)."""

    def __init__(self, description: str) -> None:
        super().__init__(409, description)


class DecisionEngine:
    """One host's decision loop; the service feeds it events and serves its endpoints."""

    def __init__(
        self,
        node: str,
        ports: DecisionPorts,
        settings: EngineSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.ports = ports
        self.settings = settings or EngineSettings()
        self.situation = Situation(node, self.settings.rules)
        self.situation.members[node] = 0.0
        self.group: frozenset[str] = frozenset({node})
        """The consensus group's members (voters and learners): the membership the quorum
        counts, which does not shrink when hosts go."""
        self.leader: str | None = None
        self.clock = clock
        self._handling: set[str] = set()
        self._departed: dict[str, float] = {}
        """Hosts declared left, with the start time they had: a peer list read before the
        departure and answered after it must not bring them back."""
        self._suspects: set[str] = set()
        """Hosts a link decision of this host is being proposed or watched for: one at a time."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._executions: dict[str, asyncio.Future[None]] = {}
        self._knowledge: tuple[float, KnowledgeBase] | None = None
        self._rereading = False
        self.decided = 0
        self.executed = 0

    # --- monitor ------------------------------------------------------------------------------

    @property
    def membership(self) -> list[str]:
        """The hosts a quorum is counted among: the group, the peers seen, and this host."""
        return sorted(self.group | set(self.situation.members) | {self.node})

    def consensus_view(self, members: set[str], voters: set[str], leader: str | None) -> None:
        """The consensus group as this host's consensus service reports it."""
        if members:
            self.group = frozenset(members)
        self.situation.voters = frozenset(voters)
        self.leader = leader

    def peers_listed(self, peers: dict[str, float]) -> None:
        """Discovery's current peer list (node: started_at): joins missed as events."""
        for node, started_at in peers.items():
            if self._departed.get(node) != started_at:
                self.situation.peer_joined(node, started_at)

    async def on_peer_change(self, change: PeerChange) -> None:
        """A membership event of this host's discovery."""
        if change.observer != self.node:
            return
        started_at = change.peer.started_at if change.peer is not None else 0.0
        if change.kind != "left":
            self._departed.pop(change.node, None)
            self.situation.peer_joined(change.node, started_at)
            return
        self._departed[change.node] = started_at
        anomaly = self.situation.peer_left(change.node, started_at, change.at)
        if change.node != self.node:
            self.detected(anomaly)
            self.spawn(self._take_over_from(change.node), f"take over from {change.node}")

    async def on_link_change(self, change: LinkChange) -> None:
        """A link report from any host's monitor. This host proposes only what it measured
        itself (the one first-hand witness of a link proposes for it), when its state changes."""
        link = change.link
        found = self.situation.link_changed(link.source, link.target, link.state, link.at)
        if link.source != self.node or change.previous == link.state:
            return  # not first-hand, or only the score moved: the anomaly is known already
        specific = [a for a in found if a.kind in ("voter-bad-link", "partition-suspected")]
        for anomaly in specific or found:
            self.detected(anomaly)

    async def on_fl_round(self, metrics: FlRoundMetrics) -> None:
        """A round's aggregate from any coordinator (every host receives the same ones).

        A trainer whose update the coordinator refused failed the round; one that missed the
        deadline did not (a slow link is the link anomalies' business, not the trainer's). A
        failing trainer that took part, or was not asked (it was excluded), recovered. The
        trainer's own host leaves the proposal to the others."""
        for node in self.situation.failing_trainers - set(metrics.rejected):
            if node in metrics.participants or node not in metrics.selected:
                self.situation.trainer_recovered(node)
        for node, reason in sorted(metrics.rejected.items()):
            what = (
                f"{metrics.coordinator} refused the update of {node} in round {metrics.round} "
                f"of job {metrics.job_id}: {reason}"
            )
            anomaly = self.situation.trainer_failed(node, metrics.at, what[:MAX_EVIDENCE_TEXT])
            if anomaly is not None and node != self.node:
                self.detected(anomaly)

    # --- analyse, plan, agree ------------------------------------------------------------------

    def detected(self, anomaly: Anomaly) -> None:
        """An anomaly this host found: propose it in the background (once per key)."""
        if anomaly.key in self._handling:
            return
        self._handling.add(anomaly.key)
        self.spawn(self._propose_detected(anomaly), f"propose {anomaly.key}")

    def spawn(self, work: Awaitable[None], name: str) -> None:
        """Run ``work`` in the background, in the current trace, logging its failure."""

        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except ServiceError as error:
                _log.info("decision.gave_up", work=name, reason=error.description)
            except Exception:
                _log.exception("decision.failed", work=name)

        def finished(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if isinstance(work, Coroutine):
                work.close()  # a no-op once run; quiets one cancelled before it started

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(finished)

    async def _propose_detected(self, anomaly: Anomaly) -> None:
        if anomaly.kind in LINK_KINDS:
            await asyncio.sleep(self.settings.settle_s)
        await asyncio.sleep(self._stagger(anomaly))
        if not self.situation.holds(anomaly):
            _log.info("decision.anomaly_cleared", key=anomaly.key)
            return
        if anomaly.kind in SEEN_ALIKE:
            existing = await self.ports.get(ANOMALY_PREFIX + anomaly.key)
            if existing.value is None:
                await self.decide(anomaly, self.settings.detect_deadline_s)
            return
        suspect = self.situation.suspect(anomaly)
        gone = [h for h in anomaly.hosts if h not in self.situation.members]
        if gone:
            _log.info("decision.explained_by_departure", key=anomaly.key, hosts=gone)
            return
        if self.situation.bad_link_share(suspect) < self.settings.rules.partition_share:
            _log.info("decision.one_link_only", key=anomaly.key, host=suspect)
            return  # one bad link between two hosts: nothing a host-level action would fix
        if suspect in self._suspects:
            _log.info("decision.already_acting", key=anomaly.key, host=suspect)
            return
        self._suspects.add(suspect)
        try:
            record = await self.decide(anomaly, self.settings.detect_deadline_s)
            if record.executor == self.node:
                await self._watching(record.key)
        finally:
            self._suspects.discard(suspect)

    def _stagger(self, anomaly: Anomaly) -> float:
        """This host's turn among the hosts that see the anomaly, the order rotated per key,
        so that usually one proposes and the others find its decision."""
        witnesses = sorted(n for n in self.situation.members if n not in anomaly.hosts)
        if self.node not in witnesses:
            return 0.0
        shift = sum(anomaly.key.encode()) % len(witnesses)
        turn = (witnesses.index(self.node) - shift) % len(witnesses)
        return turn * self.settings.stagger_s

    async def decide(self, anomaly: Anomaly, deadline_s: float) -> DecisionRecord:
        """Plan, put to the vote until a quorum approves, and commit; the committed decision
        of the anomaly (another host's, when it committed first). :class:`NotAgreed` when no
        quorum approved within ``deadline_s``, a 504 when the store did not answer in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        try:
            async with asyncio.timeout(deadline_s):
                proposal, votes, members = await self._agree(anomaly, deadline)
                commit = asyncio.ensure_future(self._commit(proposal, votes, members))
                return await asyncio.shield(commit)  # once the cas is sent, it finishes
        except TimeoutError:
            raise ServiceError(
                504, f"no committed decision for {anomaly.key} within {deadline_s:g}s"
            ) from None

    async def _agree(
        self, anomaly: Anomaly, deadline: float
    ) -> tuple[Plan, list[Vote | VoteReply], list[str]]:
        loop = asyncio.get_running_loop()
        margin = 0.1 * (deadline - loop.time())  # give up with the votes, before the 504
        while True:
            proposal = plan(anomaly, await self.knowledge(), self.situation)
            members = self.membership
            votes = await self._ballot(proposal, members, deadline)
            approvals = sum(v.approve for v in votes)
            if approvals >= quorum(len(members)):
                return proposal, votes, members
            if loop.time() + self.settings.retry_s >= deadline - margin:
                record = self._record(proposal, votes, members)
                await self._announce("rejected", record)
                reasons = "; ".join(f"{v.voter}: {v.reason}" for v in votes)
                raise NotAgreed(
                    f"{approvals} of {quorum(len(members))} approvals needed for "
                    f"{proposal.action} on {proposal.target} ({reasons})"
                )
            await asyncio.sleep(self.settings.retry_s)

    async def _ballot(
        self, proposal: Plan, members: list[str], deadline: float
    ) -> list[Vote | VoteReply]:
        """This host's own vote and the others', asked in parallel, until a quorum approves
        or every answer is in."""
        votes: list[Vote | VoteReply] = [judge(proposal, self.situation)]
        needed = quorum(len(members))
        if votes[0].approve and needed == 1:
            return votes
        loop = asyncio.get_running_loop()
        timeout_s = max(0.01, min(self.settings.vote_timeout_s, deadline - loop.time()))
        request = vote_request(self.node, proposal)
        asked = [
            asyncio.ensure_future(self.ports.vote(peer, request, timeout_s))
            for peer in members
            if peer != self.node
        ]
        try:
            for answer in asyncio.as_completed(asked):
                with contextlib.suppress(ServiceError, OSError, TimeoutError):
                    reply = await answer
                    if reply.voter in members and reply.voter != self.node:
                        votes.append(reply)
                if sum(v.approve for v in votes) >= needed:
                    break
        finally:
            for call in asked:
                call.cancel()
        return votes

    def _record(
        self, proposal: Plan, votes: list[Vote | VoteReply], members: list[str]
    ) -> DecisionRecord:
        return DecisionRecord(
            key=proposal.anomaly.key,
            anomaly=anomaly_info(proposal.anomaly),
            action=proposal.action,
            target=proposal.target,
            ranking=list(proposal.ranking),
            proposer=self.node,
            executor=self.node,
            votes=[vote_info(v) for v in votes],
            quorum=quorum(len(members)),
            members=members,
            decided_at=self.clock(),
        )

    async def _commit(
        self, proposal: Plan, votes: list[Vote | VoteReply], members: list[str]
    ) -> DecisionRecord:
        """One cas makes one proposer the winner and appends its decision to the log in the
        same commit; the winner executes. A loser returns the winner's decision.

        The cas is sent again while the store is unavailable: an answer lost to a leader's
        fall may hide this host's own commit, which the repeated cas then finds as the value."""
        record = self._record(proposal, votes, members)
        key = ANOMALY_PREFIX + record.key
        stored = record.model_dump_json()
        request = KvCas(
            key=key, expected=None, value=stored, log_record=stored, log_key=short_name(record.key)
        )
        write = await self._retried(functools.partial(self.ports.cas, request))
        if not write.ok and write.value == stored:
            write = write.model_copy(update={"ok": True})
        if not write.ok:
            if write.value is None:
                raise ServiceError(503, f"the cas on {key} failed and left no value")
            winner = DecisionRecord.model_validate_json(write.value)
            return (
                winner if winner.seq is not None else winner.model_copy(update={"seq": write.seq})
            )
        if write.seq is None:
            raise ServiceError(503, f"the cas on {key} was written without its log entry")
        record = record.model_copy(update={"seq": write.seq})
        self.decided += 1
        _log.info("decision.committed", key=record.key, action=record.action, seq=write.seq)
        await self._announce("committed", record)
        self._start_execution(record, write.revision)
        return record

    def _start_execution(self, record: DecisionRecord, revision: int) -> None:
        done = asyncio.get_running_loop().create_future()
        self._executions[record.key] = done
        self.spawn(self._execute(record, revision, done), f"execute {record.key}")

    # --- take over what a departed executor left -----------------------------------------

    async def _take_over_from(self, departed: str) -> None:
        """Execute the recent decisions ``departed`` claimed and left without an outcome."""
        last_seq = (await self._retried(lambda: self.ports.log(0, 1))).last_seq
        after = max(0, last_seq - TAKEOVER_WINDOW)
        records, _ = await self._retried(lambda: self.history(after, TAKEOVER_WINDOW))
        for record in records:
            if record.executor == departed and record.outcome is None:
                self.spawn(self._take_over(record.key, departed), f"take over {record.key}")

    async def _take_over(self, key: str, departed: str) -> None:
        """Once the decision's outcome deadline has passed with its anomaly still here, its
        executor still gone and no outcome stored, claim it with a cas on the stored decision
        (one host wins) and execute it. An executor that acted and departed before its outcome
        was stored is acted for again: execution after a departure is at least once."""
        record, _ = await self._retried(lambda: self._stored(key))
        if record is None or record.executor != departed or record.outcome is not None:
            return
        anomaly = anomaly_of(record.anomaly)
        due = record.decided_at + self.settings.outcome_s - self.clock()
        await asyncio.sleep(max(0.0, due) + self._stagger(anomaly))
        if departed not in self._departed:
            _log.info("decision.executor_back", key=key, executor=departed)
            return
        if not self.situation.holds(anomaly):
            _log.info("decision.takeover_unneeded", key=key, executor=departed)
            return
        for _ in range(STORE_ATTEMPTS):
            record, revision = await self._retried(lambda: self._stored(key))
            if record is None or record.outcome is not None:
                return
            if record.executor == self.node and record.taken_over_from == departed:
                break  # this host's cas below committed, though its answer was lost to a 503
            if record.executor != departed:
                return  # another host took it over
            claim = record.model_copy(update={"executor": self.node, "taken_over_from": departed})
            text = claim.model_dump_json()
            request = KvCas(
                key=ANOMALY_PREFIX + key,
                expected_revision=revision,
                value=text,
                log_record=text,
                log_key=takeover_name(key, departed),
            )
            # the same cas again is safe: once one commits, the revision has moved on
            write = await self._retried(functools.partial(self.ports.cas, request))
            if write.ok:
                record, revision = claim, write.revision
                break
        else:
            return
        _log.info("decision.taken_over", key=key, action=record.action, executor=departed)
        await self._announce("taken-over", record)
        self._start_execution(record, revision)

    async def _stored(self, key: str) -> tuple[DecisionRecord | None, int]:
        """The stored decision of anomaly ``key`` (None if absent or unreadable), and its
        revision."""
        stored = await self.ports.get(ANOMALY_PREFIX + key)
        if stored.value is None:
            return None, stored.revision
        try:
            return DecisionRecord.model_validate_json(stored.value), stored.revision
        except ValueError:
            return None, stored.revision

    async def _retried(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, made again ``retry_s`` apart while the store is unavailable (as while
        a departed leader's successor is elected)."""
        for _ in range(STORE_ATTEMPTS - 1):
            try:
                return await call()
            except ServiceError as error:
                if error.code not in STORE_UNAVAILABLE:
                    raise
            await asyncio.sleep(self.settings.retry_s)
        return await call()

    async def _watching(self, key: str) -> None:
        """Until this host's execution of decision ``key`` has its outcome."""
        execution = self._executions.get(key)
        if execution is not None:
            await asyncio.shield(execution)

    # --- execute and learn ---------------------------------------------------------------

    async def _execute(
        self, record: DecisionRecord, revision: int, done: asyncio.Future[None]
    ) -> None:
        """Act once (this host won the cas, which wrote ``revision``), then watch whether the
        anomaly clears."""
        try:
            await self._act_and_learn(record, revision)
        finally:
            self._executions.pop(record.key, None)
            if not done.done():
                done.set_result(None)

    async def _act_and_learn(self, record: DecisionRecord, revision: int) -> None:
        try:
            done = await self.ports.act(record)
        except ServiceError as error:
            done = f"failed: {error.description}"
        except Exception as error:
            done = f"failed: {type(error).__name__}: {error}"
        self.executed += 1
        record = record.model_copy(update={"executed": done[:1024]})
        _log.info("decision.executed", key=record.key, action=record.action, result=done)
        await self._announce("executed", record)
        if done.startswith("failed"):
            await self._learn(record, "failed", revision)
            return
        cleared = await self._clears(record, self.settings.outcome_s)
        await self._learn(record, "cleared" if cleared else "persisted", revision)
        if record.action == "demote-voter":
            await self._promote_when_recovered(record)

    async def _clears(self, record: DecisionRecord, within_s: float) -> bool:
        anomaly = anomaly_of(record.anomaly)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self.situation.holds(anomaly):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def _promote_when_recovered(self, record: DecisionRecord) -> None:
        if await self._clears(record, self.settings.promote_within_s):
            promote = record.model_copy(update={"action": "promote-voter", "executed": None})
            done = await self.ports.act(promote)
            _log.info("decision.promoted", key=record.key, target=record.target, result=done)

    async def _learn(self, record: DecisionRecord, outcome: str, revision: int) -> None:
        """Record the outcome in the knowledge base (a cas loop), and beside the decision
        (written at ``revision``) and in the log, in one commit."""
        record = record.model_copy(update={"outcome": outcome})
        for _ in range(KNOWLEDGE_CAS_ATTEMPTS):
            stored = await self.ports.get(KNOWLEDGE_KEY)
            knowledge = parse_knowledge(stored.value)
            knowledge.record(record.anomaly.kind, record.action, cleared=outcome == "cleared")
            write = await self.ports.cas(
                KvCas(
                    key=KNOWLEDGE_KEY,
                    expected_revision=stored.revision,
                    value=json.dumps(knowledge.to_dict(), sort_keys=True),
                )
            )
            if write.ok:
                self._knowledge = (time.monotonic(), knowledge)
                break
        else:
            _log.warning("knowledge.contended", key=record.key)
        text = record.model_dump_json()
        key, log_key = ANOMALY_PREFIX + record.key, outcome_name(record.key)
        write = await self.ports.cas(
            KvCas(key=key, expected_revision=revision, value=text, log_record=text, log_key=log_key)
        )
        if not write.ok:  # written since the claim (not by this loop): keep both anyway
            await self.ports.put(key, text)
            await self.ports.append(text, log_key)
        _log.info("decision.outcome", key=record.key, outcome=outcome)
        await self._announce("outcome", record)

    async def knowledge(self) -> KnowledgeBase:
        """The knowledge base from the consensus store: read once, then served from memory
        and re-read in the background once it is ``knowledge_cache_s`` old. A plan may so rank
        by knowledge a read older; the vote and the commit never wait for it."""
        if self._knowledge is None:
            return await self._read_knowledge()
        read_at, knowledge = self._knowledge
        stale = time.monotonic() - read_at >= self.settings.knowledge_cache_s
        if stale and not self._rereading:
            self._rereading = True
            self.spawn(self._reread_knowledge(), "read the knowledge base")
        return knowledge

    async def _read_knowledge(self) -> KnowledgeBase:
        started = time.monotonic()
        stored = await self.ports.get(KNOWLEDGE_KEY)
        knowledge = parse_knowledge(stored.value)
        if self._knowledge is None or self._knowledge[0] <= started:  # else learnt meanwhile
            self._knowledge = (started, knowledge)
        return knowledge

    async def _reread_knowledge(self) -> None:
        try:
            await self._read_knowledge()
        finally:
            self._rereading = False

    async def _announce(self, kind: DecisionEventKind, record: DecisionRecord) -> None:
        event = DecisionEvent(node=self.node, kind=kind, record=record, at=self.clock())
        try:
            await self.ports.publish(event)
        except ServiceError as error:  # the decision stands; only its event is lost
            _log.warning("decision.announce_failed", kind=kind, error=error.description)

    # --- endpoints -----------------------------------------------------------------------

    async def vote(self, request: VoteRequest) -> VoteReply:
        """Judge another host's proposal with this host's own view."""
        verdict = judge(plan_of(request), self.situation)
        return VoteReply(voter=self.node, approve=verdict.approve, reason=verdict.reason)

    def context(self, kind: str, subject: str, episode: str | None) -> Anomaly | None:
        """The anomaly this host sees now of ``kind`` on ``subject``, if any (without an
        episode the caller means the current one)."""
        if episode is not None:
            return None
        key_prefix = f"{kind}/{subject}/"
        current = [k for k in self._handling if k.startswith(key_prefix)]
        if not current:
            return None
        _, _, latest = max(current).rpartition("/")
        return Anomaly(kind, subject, latest)  # type: ignore[arg-type]

    async def history(self, after: int, limit: int) -> tuple[list[DecisionRecord], int]:
        """Committed decisions from the log, each with its latest outcome."""
        page = await self.ports.log(after, limit)
        merged: dict[str, DecisionRecord] = {}
        for entry in page.decisions:
            try:
                record = DecisionRecord.model_validate_json(entry.record)
            except ValueError:
                continue  # another user of the log
            first = merged.get(record.key)
            seq = first.seq if first is not None else entry.seq
            merged[record.key] = record.model_copy(update={"seq": seq})
        return sorted(merged.values(), key=lambda r: r.seq or 0), page.last_seq

    async def close(self) -> None:
        """Cancel proposals and executions in flight."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def parse_knowledge(value: str | None) -> KnowledgeBase:
    """The knowledge base in its stored form; an unreadable one counts as empty (logged)."""
    if value is None:
        return KnowledgeBase()
    try:
        return KnowledgeBase.from_dict(json.loads(value))
    except (ValueError, TypeError, AttributeError) as error:
        _log.warning("knowledge.unreadable", error=str(error))
        return KnowledgeBase()
