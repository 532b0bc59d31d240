"""The Raft state machine of one node: pure, driven by ticks, messages and proposals."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from meshmind.raft._confchange import ConfChange, decode_conf, encode_conf
from meshmind.raft._config import RaftConfig
from meshmind.raft._errors import NotLeader, ProposalRefused
from meshmind.raft._log import RaftLog
from meshmind.raft._messages import (
    Append,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    PreVote,
    PreVoteResponse,
    TimeoutNow,
    Vote,
    VoteResponse,
)
from meshmind.raft._progress import Progress, ProgressState
from meshmind.raft._ready import ReadState, Ready
from meshmind.raft._types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Recovered,
    Snapshot,
    SnapshotMeta,
)


class Role(enum.Enum):
    """A node's part in the protocol."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True)
class _PendingRead:
    request_id: int
    index: int
    acks: set[str] = field(default_factory=set)


class RaftNode:
    """One Raft participant, modelled on etcd's raft package: no I/O, no clock, no randomness
    but the configured generator. Feed it ``tick``/``step``/proposals; drain ``ready``."""

    def __init__(self, config: RaftConfig, *, restored: Recovered | None = None) -> None:
        recovered = restored or Recovered()
        self.config = config
        self.id = config.id
        self._log = RaftLog(recovered.snapshot, recovered.entries, recovered.hard_state.commit)
        self._term = recovered.hard_state.term
        self._vote = recovered.hard_state.vote
        self._persisted_state = recovered.hard_state
        self._initial_conf = ConfState(config.voters, config.learners)
        self._conf = self._conf_at(self._log.last_index)
        self.role = Role.FOLLOWER
        self._lead: str | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self._transferee: str | None = None
        self._pending_conf_index = 0
        self._appends_due = False
        self._messages: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads: dict[int, _PendingRead] = {}
        self._read_context = 0
        self._reads_awaiting_commit: list[int] = []
        self._reset_randomized_timeout()
        self._handlers: dict[type, Callable[[Message], None]] = {
            PreVote: self._on_vote_request,
            Vote: self._on_vote_request,
            PreVoteResponse: self._on_vote_response,
            VoteResponse: self._on_vote_response,
            Append: self._on_append,
            AppendResponse: self._on_append_response,
            Heartbeat: self._on_heartbeat,
            HeartbeatResponse: self._on_heartbeat_response,
            InstallSnapshot: self._on_install_snapshot,
            TimeoutNow: self._on_timeout_now,
        }

    # ---- what the application and tests may look at

    @property
    def term(self) -> int:
        """The current term."""
        return self._term

    @property
    def leader(self) -> str | None:
        """The node this one believes leads its term, if any."""
        return self._lead

    @property
    def silent_ticks(self) -> int:
        """Ticks since a follower last heard from its leader (or since its last election)."""
        return self._election_elapsed

    @property
    def conf(self) -> ConfState:
        """The membership in effect (the latest one in the log, committed or not)."""
        return self._conf

    @property
    def commit_index(self) -> int:
        """The highest index known committed."""
        return self._log.committed

    @property
    def applied_index(self) -> int:
        """The highest index handed out for applying and acknowledged by ``advance``."""
        return self._log.applied

    @property
    def last_index(self) -> int:
        """The index of the last entry in the log."""
        return self._log.last_index

    @property
    def first_index(self) -> int:
        """The index of the first entry still in memory (one past the snapshot)."""
        return self._log.offset + 1

    @property
    def log_entries(self) -> tuple[Entry, ...]:
        """The entries after the snapshot."""
        return tuple(self._log.entries)

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot (taken here or received)."""
        return self._log.snapshot

    @property
    def transferee(self) -> str | None:
        """The node leadership is being transferred to, if any."""
        return self._transferee

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None if not in memory."""
        return self._log.term_at(index)

    def progress(self, node: str) -> Progress | None:
        """The leader's replication state for ``node``."""
        return self._progress.get(node)

    # ---- driving the node

    def tick(self) -> None:
        """One unit of logical time passed."""
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._promotable() and self._election_elapsed >= self._randomized_timeout:
                self._election_elapsed = 0
                self._campaign(transfer=False)

    def step(self, message: Message) -> None:
        """Handle a message from another node."""
        if message.recipient != self.id:
            raise ValueError(f"message for {message.recipient} stepped into {self.id}")
        if message.term > self._term:
            if isinstance(message, PreVote | Vote):
                forced = isinstance(message, Vote) and message.transfer
                in_lease = (
                    self.config.check_quorum
                    and self._lead is not None
                    and self._election_elapsed < self.config.election_tick
                )
                if in_lease and not forced:
                    return
            if isinstance(message, PreVote) or (
                isinstance(message, PreVoteResponse) and message.granted
            ):
                pass
            elif isinstance(message, Append | Heartbeat | InstallSnapshot):
                self._become_follower(message.term, message.sender)
            else:
                self._become_follower(message.term, None)
        elif message.term < self._term:
            if isinstance(message, Append | Heartbeat) and (
                self.config.check_quorum or self.config.pre_vote
            ):
                self._send(AppendResponse(self.id, message.sender, self._term, 0))
            elif isinstance(message, PreVote):
                self._send(PreVoteResponse(self.id, message.sender, self._term, False))
            return
        self._handlers[type(message)](message)

    def propose(self, data: bytes) -> int:
        """Append an application command; returns its index (committed later, or never)."""
        self._check_can_propose()
        return self._append_own(EntryKind.NORMAL, data)

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a single-step membership change, effective as soon as each node appends it."""
        self._check_can_propose()
        if self._pending_conf_index > self._log.committed:
            raise ProposalRefused("the previous membership change is not committed yet")
        if self._log.term_at(self._log.committed) != self._term:
            raise ProposalRefused("no entry of this term is committed yet")
        new_conf = change.apply_to(self._conf)
        index = self._append_own(EntryKind.CONFIG, encode_conf(new_conf))
        self._pending_conf_index = index
        return index

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter ``to`` once its log has caught up; proposals are refused
        meanwhile, and the transfer is abandoned after an election timeout."""
        if self.role is not Role.LEADER:
            raise NotLeader(self._lead)
        if to not in self._conf.voters:
            raise ValueError(f"{to} is not a voter")
        if to == self.id or to == self._transferee:
            return
        self._transferee = to
        self._election_elapsed = 0
        if self._progress[to].match == self._log.last_index:
            self._send(TimeoutNow(self.id, to, self._term))
        else:
            self._send_append(to)

    def read_index(self, request_id: int) -> None:
        """Start a linearizable read: a :class:`ReadState` for ``request_id`` comes out of
        ``ready`` once a quorum confirmed this node still leads."""
        if self.role is not Role.LEADER:
            raise NotLeader(self._lead)
        if self._log.term_at(self._log.committed) != self._term:
            self._reads_awaiting_commit.append(request_id)
        else:
            self._start_read(request_id)

    def forget_leader(self) -> None:
        """Forget a follower's leader, as when a failure detector outside Raft says it is gone
        (etcd's ForgetLeader): the follower then grants pre-votes and votes at once instead of
        waiting out its leader's lease, so a quorum that forgot can elect without waiting for
        an election timeout. It campaigns only on its own timeout, as before, and hearing from
        the leader again restores it."""
        if self.role is Role.FOLLOWER:
            self._lead = None

    def campaign(self) -> None:
        """Start an election now (with a pre-vote when configured)."""
        if self._promotable() and self.role is not Role.LEADER:
            self._campaign(transfer=False)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine as of applied ``index`` and drop the entries
        it covers; persist the returned snapshot (storage's ``compact``)."""
        term = self._log.term_at(index)
        if term is None:
            raise ValueError(f"index {index} is not in the log")
        snapshot = Snapshot(SnapshotMeta(index, term, self._conf_at(index)), data)
        self._log.compact(snapshot)
        return snapshot

    def ready(self) -> Ready | None:
        """The work to do now, or None. Call ``advance`` with it once it is done."""
        if self._appends_due:
            self._appends_due = False
            if self.role is Role.LEADER:
                self._broadcast_append(if_empty=False)
        log = self._log
        persisted = self._persisted_state
        state_changed = (
            persisted.term != self._term
            or persisted.vote != self._vote
            or persisted.commit != log.committed
        )
        if not (
            state_changed
            or self._messages
            or self._read_states
            or log.pending_snapshot
            or log.unstable_from <= log.last_index
            or log.applying < log.committed
        ):
            return None
        hard_state = HardState(self._term, self._vote, log.committed) if state_changed else None
        snapshot = log.pending_snapshot
        log.pending_snapshot = None
        vote_durable = persisted.term == self._term and persisted.vote == self._vote
        if hard_state:
            self._persisted_state = hard_state
        entries = log.unstable_entries()
        ready = Ready(
            hard_state,
            entries,
            snapshot,
            self._messages,
            log.entries_to_apply(),
            self._read_states,
            must_sync=bool(entries or snapshot or not vote_durable),
            send_before_sync=self.role is Role.LEADER and vote_durable,
        )
        self._messages = []
        self._read_states = []
        return ready

    def advance(self, ready: Ready) -> None:
        """The application persisted, sent and applied ``ready``."""
        if ready.entries:
            last = ready.entries[-1]
            self._log.stable_to(last.index, last.term)
        if ready.committed:
            self._log.applied = max(self._log.applied, ready.committed[-1].index)
        if ready.entries and self.role is Role.LEADER and self._maybe_commit():
            self._broadcast_append()

    # ---- roles

    def _promotable(self) -> bool:
        return self.id in self._conf.voters

    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
        self._lead = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {}
        self._progress = {}
        self._transferee = None
        self._reads = {}
        self._reads_awaiting_commit = []

    def _reset_randomized_timeout(self) -> None:
        election = self.config.election_tick
        self._randomized_timeout = election + self.config.rng.randrange(election)

    def _become_follower(self, term: int, lead: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self._lead = lead

    def _become_pre_candidate(self) -> None:
        self.role = Role.PRE_CANDIDATE
        self._votes = {}
        self._lead = None

    def _become_candidate(self) -> None:
        self._reset(self._term + 1)
        self._vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self._term)
        self.role = Role.LEADER
        self._lead = self.id
        self._sync_progress()
        self._pending_conf_index = self._log.last_index
        self._append_own(EntryKind.NOOP, b"")
        self._broadcast_append()

    def _campaign(self, *, transfer: bool) -> None:
        pre = self.config.pre_vote and not transfer
        if pre:
            self._become_pre_candidate()
            term = self._term + 1
        else:
            self._become_candidate()
            term = self._term
        if self._poll(self.id, granted=True):
            return
        last_index, last_term = self._log.last_index, self._log.last_term
        for voter in sorted(self._conf.voters - {self.id}):
            if pre:
                self._send(PreVote(self.id, voter, term, last_index, last_term))
            else:
                self._send(Vote(self.id, voter, term, last_index, last_term, transfer))

    def _poll(self, voter: str, *, granted: bool) -> bool:
        """Count a vote; True if it decided the election."""
        self._votes.setdefault(voter, granted)
        voters = self._conf.voters
        yes = sum(1 for v, g in self._votes.items() if g and v in voters)
        no = sum(1 for v, g in self._votes.items() if not g and v in voters)
        quorum = len(voters) // 2 + 1
        if yes >= quorum:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(transfer=True)
            else:
                self._become_leader()
            return True
        if no > len(voters) - quorum:
            self._become_follower(self._term, None)
            return True
        return False

    # ---- messages, any role

    def _send(self, message: Message) -> None:
        self._messages.append(message)

    def _on_vote_request(self, message: Message) -> None:
        assert isinstance(message, PreVote | Vote)
        pre = isinstance(message, PreVote)
        can_vote = (
            self._vote == message.sender
            or (self._vote is None and self._lead is None)
            or (pre and message.term > self._term)
        )
        granted = can_vote and self._log.is_up_to_date(message.last_index, message.last_term)
        term = message.term if granted else self._term
        if pre:
            self._send(PreVoteResponse(self.id, message.sender, term, granted))
            return
        self._send(VoteResponse(self.id, message.sender, term, granted))
        if granted:
            self._election_elapsed = 0
            self._vote = message.sender

    def _on_vote_response(self, message: Message) -> None:
        assert isinstance(message, PreVoteResponse | VoteResponse)
        if isinstance(message, PreVoteResponse):
            if self.role is not Role.PRE_CANDIDATE:
                return
            if message.granted and message.term != self._term + 1:
                return
        elif self.role is not Role.CANDIDATE:
            return
        self._poll(message.sender, granted=message.granted)

    def _heard_from_leader(self, message: Message) -> None:
        if self.role is not Role.FOLLOWER:
            self._become_follower(message.term, message.sender)
        self._election_elapsed = 0
        self._lead = message.sender

    def _on_append(self, message: Message) -> None:
        assert isinstance(message, Append)
        if self.role is Role.LEADER:
            return
        self._heard_from_leader(message)
        log = self._log
        if message.prev_index < log.committed:
            self._send(AppendResponse(self.id, message.sender, self._term, log.committed))
            return
        outcome = log.maybe_append(
            message.prev_index, message.prev_term, message.commit, message.entries
        )
        if outcome is not None:
            last_new, config_changed = outcome
            if config_changed:
                self._refresh_conf()
            self._send(AppendResponse(self.id, message.sender, self._term, last_new))
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(message.prev_index, log.last_index), message.prev_term
        )
        self._send(
            AppendResponse(
                self.id,
                message.sender,
                self._term,
                message.prev_index,
                reject=True,
                reject_hint=hint_index,
                hint_term=hint_term,
            )
        )

    def _on_heartbeat(self, message: Message) -> None:
        assert isinstance(message, Heartbeat)
        if self.role is Role.LEADER:
            return
        self._heard_from_leader(message)
        self._log.commit_to(min(message.commit, self._log.last_index))
        self._send(HeartbeatResponse(self.id, message.sender, self._term, message.context))

    def _on_install_snapshot(self, message: Message) -> None:
        assert isinstance(message, InstallSnapshot)
        if self.role is Role.LEADER:
            return
        self._heard_from_leader(message)
        meta = message.snapshot.meta
        log = self._log
        if meta.index > log.committed:
            if log.term_at(meta.index) == meta.term:
                log.commit_to(meta.index)
            else:
                log.restore(message.snapshot)
                self._refresh_conf()
        self._send(AppendResponse(self.id, message.sender, self._term, log.committed))

    def _on_timeout_now(self, message: Message) -> None:
        if self.role is Role.FOLLOWER and self._promotable():
            self._campaign(transfer=True)

    # ---- the leader

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self._lead)
        if self._transferee is not None:
            raise ProposalRefused(f"leadership is being transferred to {self._transferee}")

    def _append_own(self, kind: EntryKind, data: bytes) -> int:
        index = self._log.last_index + 1
        if self._log.append([Entry(self._term, index, kind, data)]):
            self._refresh_conf()
        self._appends_due = True
        return index

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        election = self.config.election_tick
        if self._election_elapsed >= election:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                self._become_follower(self._term, None)
                return
            self._transferee = None
        for progress in self._progress.values():
            if progress.state is ProgressState.SNAPSHOT:
                progress.snapshot_ticks += 1
                if progress.snapshot_ticks >= election:
                    progress.become_probe()
        if self._heartbeat_elapsed >= self.config.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        voters = self._conf.voters
        active = sum(
            1
            for voter in voters
            if voter == self.id or (voter in self._progress and self._progress[voter].recent_active)
        )
        for progress in self._progress.values():
            progress.recent_active = False
        return active >= len(voters) // 2 + 1

    def _broadcast_heartbeat(self) -> None:
        context = max(self._reads, default=0)
        for node, progress in self._progress.items():
            commit = min(progress.match, self._log.committed)
            self._send(Heartbeat(self.id, node, self._term, commit, context))

    def _broadcast_append(self, *, if_empty: bool = True) -> None:
        for node in self._progress:
            self._send_append(node, if_empty=if_empty)

    def _send_append(self, to: str, *, if_empty: bool = True) -> bool:
        progress = self._progress[to]
        if progress.paused:
            return False
        log = self._log
        prev_index = progress.next - 1
        prev_term = log.term_at(prev_index)
        if prev_term is None:
            if log.snapshot is None:
                return False
            self._send(InstallSnapshot(self.id, to, self._term, log.snapshot))
            progress.become_snapshot(log.snapshot.meta.index)
            return True
        config = self.config
        entries = log.batch_from(progress.next, config.max_append_entries, config.max_append_bytes)
        if not entries and not if_empty:
            return False
        self._send(Append(self.id, to, self._term, prev_index, prev_term, entries, log.committed))
        if entries:
            progress.sent(entries[-1].index)
        elif progress.state is ProgressState.PROBE:
            progress.probe_sent = True
        return True

    def _on_append_response(self, message: Message) -> None:
        assert isinstance(message, AppendResponse)
        progress = self._progress.get(message.sender)
        if self.role is not Role.LEADER or progress is None:
            return
        progress.recent_active = True
        sender = message.sender
        if message.reject:
            next_probe = message.reject_hint
            if message.hint_term > 0:
                next_probe, _ = self._log.find_conflict_by_term(
                    message.reject_hint, message.hint_term
                )
            if progress.maybe_decrease_to(message.index, next_probe):
                if progress.state is ProgressState.REPLICATE:
                    progress.become_probe()
                self._send_append(sender)
            return
        was_paused = progress.paused
        if not progress.maybe_update(message.index):
            return
        if progress.state is ProgressState.PROBE:
            progress.become_replicate()
        elif progress.state is ProgressState.SNAPSHOT:
            if progress.match >= progress.pending_snapshot:
                progress.become_probe()
                progress.become_replicate()
        else:
            progress.acknowledged(message.index)
        if self._maybe_commit():
            if self.role is not Role.LEADER:
                return
            self._broadcast_append()
        elif was_paused:
            self._send_append(sender)
        while self._send_append(sender, if_empty=False):
            pass
        if sender == self._transferee and progress.match == self._log.last_index:
            self._send(TimeoutNow(self.id, sender, self._term))

    def _on_heartbeat_response(self, message: Message) -> None:
        assert isinstance(message, HeartbeatResponse)
        progress = self._progress.get(message.sender)
        if self.role is not Role.LEADER or progress is None:
            return
        progress.recent_active = True
        progress.probe_sent = False
        if progress.state is ProgressState.REPLICATE and progress.paused:
            progress.inflight.popleft()
        if progress.match < self._log.last_index:
            self._send_append(message.sender)
        if message.context:
            self._acknowledge_read(message.sender, message.context)

    def _maybe_commit(self) -> bool:
        voters = self._conf.voters
        if not voters:
            return False
        matches = sorted(
            (
                self._log.stable
                if voter == self.id
                else (self._progress[voter].match if voter in self._progress else 0)
                for voter in voters
            ),
            reverse=True,
        )
        index = matches[len(matches) // 2]
        if index <= self._log.committed or self._log.term_at(index) != self._term:
            return False
        self._log.commit_to(index)
        self._on_commit()
        return True

    def _on_commit(self) -> None:
        if self._reads_awaiting_commit:
            waiting, self._reads_awaiting_commit = self._reads_awaiting_commit, []
            for request_id in waiting:
                self._start_read(request_id)
        configs = self._log.config_indices
        if self.id not in self._conf.voters and configs and configs[-1] <= self._log.committed:
            self._broadcast_append()  # so the others learn the commit before it steps down
            self._become_follower(self._term, None)

    # ---- linearizable reads

    def _start_read(self, request_id: int) -> None:
        self._read_context += 1
        read = _PendingRead(request_id, self._log.committed, {self.id})
        self._reads[self._read_context] = read
        if not self._release_reads(self._read_context):
            self._broadcast_heartbeat()

    def _acknowledge_read(self, node: str, context: int) -> None:
        read = self._reads.get(context)
        if read is not None:
            read.acks.add(node)
            self._release_reads(context)

    def _release_reads(self, context: int) -> bool:
        """If the read at ``context`` has a quorum, serve it and every earlier one."""
        voters = self._conf.voters
        if len(self._reads[context].acks & voters) < len(voters) // 2 + 1:
            return False
        for pending in [c for c in self._reads if c <= context]:
            read = self._reads.pop(pending)
            self._read_states.append(ReadState(read.request_id, read.index))
        return True

    # ---- membership

    def _conf_at(self, index: int) -> ConfState:
        log = self._log
        for config_index in reversed(log.config_indices):
            if config_index <= index:
                return decode_conf(log.entry_at(config_index).data)
        if log.snapshot is not None:
            return log.snapshot.meta.conf
        return self._initial_conf

    def _refresh_conf(self) -> None:
        conf = self._conf_at(self._log.last_index)
        if conf == self._conf:
            return
        self._conf = conf
        if self.role is not Role.LEADER:
            return
        self._sync_progress()
        if self._transferee is not None and self._transferee not in conf.voters:
            self._transferee = None
        if self._maybe_commit():
            self._appends_due = True

    def _sync_progress(self) -> None:
        members = self._conf.members - {self.id}
        for gone in set(self._progress) - members:
            del self._progress[gone]
        for node in members - set(self._progress):
            self._progress[node] = Progress(
                next=self._log.last_index + 1, max_inflight=self.config.max_inflight
            )
