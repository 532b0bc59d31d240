"""Step-by-step transcripts of Raft's classic hard cases: the exact messages and states."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from meshmind.raft import (
    Append,
    AppendResponse,
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Message,
    PreVote,
    PreVoteResponse,
    ProposalRefused,
    RaftConfig,
    RaftNode,
    ReadState,
    Recovered,
    Role,
    TimeoutNow,
    Vote,
    VoteResponse,
    decode_conf,
    encode_conf,
)

ELECTION = 10


class Cluster:
    """Nodes wired by hand: messages wait in an outbox until a test delivers or drops them."""

    def __init__(
        self,
        voters: list[str],
        *,
        others: tuple[str, ...] = (),
        restored: dict[str, Recovered] | None = None,
        pre_vote: bool = True,
    ) -> None:
        self.nodes: dict[str, RaftNode] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.read_states: dict[str, list[ReadState]] = {}
        self.outbox: list[Message] = []
        self.cut: set[str] = set()
        for seed, node in enumerate(voters + list(others)):
            config = RaftConfig(
                id=node,
                voters=frozenset(voters),
                rng=random.Random(seed),
                election_tick=ELECTION,
                max_append_entries=16,
                pre_vote=pre_vote,
            )
            self.nodes[node] = RaftNode(config, restored=(restored or {}).get(node))
            self.applied[node] = []
            self.read_states[node] = []

    def __getitem__(self, node: str) -> RaftNode:
        return self.nodes[node]

    def flush(self, node: str) -> list[Message]:
        """Persist, apply and advance ``node``'s work; return (and queue) what it sends."""
        sent: list[Message] = []
        raft = self.nodes[node]
        while (ready := raft.ready()) is not None:
            sent += ready.messages
            self.applied[node] += ready.committed
            self.read_states[node] += ready.read_states
            raft.advance(ready)
        self.outbox += sent
        return sent

    def take(self) -> list[Message]:
        """Everything every node wants to send now (emptying the outbox)."""
        for node in self.nodes:
            self.flush(node)
        taken, self.outbox = self.outbox, []
        return taken

    def deliver(self, messages: Sequence[Message]) -> None:
        """Step each message into its recipient, unless either end is cut off."""
        for message in messages:
            if message.sender in self.cut or message.recipient in self.cut:
                continue
            self.nodes[message.recipient].step(message)

    def settle(self, rounds: int = 20) -> None:
        """Deliver until nobody has anything more to say."""
        for _ in range(rounds):
            messages = self.take()
            if not messages:
                return
            self.deliver(messages)
        raise AssertionError("the cluster did not settle")

    def elect(self, node: str) -> None:
        self.nodes[node].campaign()
        self.settle()
        assert self.nodes[node].role is Role.LEADER

    def tick(self, nodes: list[str], times: int) -> None:
        """Tick ``nodes``, delivering messages between ticks."""
        for _ in range(times):
            for node in nodes:
                self.nodes[node].tick()
            self.settle()

    def propose(self, node: str, data: bytes) -> int:
        index = self.nodes[node].propose(data)
        self.settle()
        return index


def role(raft: RaftNode) -> Role:
    """A node's role, read afresh (it changes under the test's feet)."""
    return raft.role


def entries_of(raft: RaftNode) -> list[tuple[int, int, bytes]]:
    return [(e.index, e.term, e.data) for e in raft.log_entries]


def test_a_leader_that_loses_its_quorum_steps_down_after_an_election_timeout() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    term = cluster["n1"].term
    cluster.tick(["n1", "n2", "n3"], ELECTION)
    assert role(cluster["n1"]) is Role.LEADER  # followers answered: the quorum is active

    cluster.cut = {"n2", "n3"}
    cluster.tick(["n1"], ELECTION)
    assert role(cluster["n1"]) is Role.LEADER  # both followers answered in the last timeout
    cluster.tick(["n1"], ELECTION - 1)
    assert role(cluster["n1"]) is Role.LEADER
    cluster.tick(["n1"], 1)  # a whole election timeout without a quorum
    assert role(cluster["n1"]) is Role.FOLLOWER
    assert cluster["n1"].leader is None
    assert cluster["n1"].term == term  # stepping down alone changes no term


def test_a_stale_leader_returning_steps_down_and_loses_its_uncommitted_entries() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    cluster.cut = {"n1"}
    stale_index = cluster.propose("n1", b"lost")
    assert cluster["n1"].commit_index < stale_index

    cluster.tick(["n2", "n3"], ELECTION)  # the lease the followers gave n1 runs out
    cluster.elect("n2")
    new_index = cluster.propose("n2", b"kept")
    assert cluster["n2"].term_at(stale_index) != cluster["n1"].term_at(stale_index)
    assert cluster["n2"].commit_index == new_index

    cluster.cut = set()
    n1 = cluster["n1"]
    assert role(n1) is Role.LEADER
    assert n1.term < cluster["n2"].term
    n1.tick()  # a heartbeat at the old term
    heartbeats = [m for m in cluster.flush("n1") if isinstance(m, Heartbeat)]
    assert {m.recipient for m in heartbeats} == {"n2", "n3"}
    cluster.outbox = []
    cluster.deliver(heartbeats)
    answers = cluster.take()
    assert sorted(answers, key=lambda m: m.sender) == [
        AppendResponse("n2", "n1", cluster["n2"].term, 0),
        AppendResponse("n3", "n1", cluster["n2"].term, 0),
    ]
    cluster.deliver(answers)
    assert role(n1) is Role.FOLLOWER
    assert n1.term == cluster["n2"].term

    cluster.tick(["n2"], 1)
    assert entries_of(n1) == entries_of(cluster["n2"])
    assert n1.log_entries[new_index - 1].data == b"kept"
    assert b"lost" not in [e.data for e in n1.log_entries]
    assert [e.data for e in cluster.applied["n1"]][-1] == b"kept"


def log_with_terms(terms: list[int]) -> tuple[Entry, ...]:
    return tuple(Entry(term, index, EntryKind.NORMAL, b"") for index, term in enumerate(terms, 1))


def test_a_divergent_follower_log_is_found_with_the_hint_and_its_suffix_replaced() -> None:
    leader_log = log_with_terms([1, 1, 1, 4, 4, 5, 5, 6, 6, 6])
    follower_log = log_with_terms([1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3])
    cluster = Cluster(
        ["n1", "n2", "n3"],
        restored={
            "n1": Recovered(HardState(6, None, 3), None, leader_log),
            "n2": Recovered(HardState(3, None, 3), None, follower_log),
        },
    )
    cluster["n1"].campaign()
    cluster.deliver(cluster.take())  # pre-votes
    cluster.deliver(cluster.take())  # pre-vote responses
    cluster.deliver(cluster.take())  # votes
    cluster.deliver(cluster.take())  # vote responses: n1 leads term 7 and appends its no-op
    assert role(cluster["n1"]) is Role.LEADER
    assert cluster["n1"].term == 7
    first = [m for m in cluster.take() if m.recipient == "n2"]
    noop = Entry(7, 11, EntryKind.NOOP, b"")
    assert first == [Append("n1", "n2", 7, 10, 6, (noop,), 3)]

    cluster.deliver(first)
    rejection = cluster.take()
    # n2's entry 10 has term 3; its last entry with a term <= 6 is index 10 (term 3).
    assert rejection == [AppendResponse("n2", "n1", 7, 10, True, 10, 3)]

    cluster.deliver(rejection)
    retry = cluster.take()
    # The leader skips every entry of terms above 3 at once: its last entry of term <= 3 is 3.
    assert retry == [Append("n1", "n2", 7, 3, 1, (*leader_log[3:], noop), 3)]

    cluster.deliver(retry)
    assert cluster.take() == [AppendResponse("n2", "n1", 7, 11)]
    assert entries_of(cluster["n2"]) == entries_of(cluster["n1"])


def test_a_membership_change_during_a_partition_commits_only_with_the_new_quorum() -> None:
    cluster = Cluster(["n1", "n2", "n3"], others=("n4",))
    cluster.elect("n1")
    cluster.cut = {"n3", "n4"}
    change = cluster["n1"].propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, "n4"))
    assert cluster["n1"].conf == ConfState(frozenset({"n1", "n2", "n3", "n4"}))
    cluster.settle()
    after = cluster.propose("n1", b"after the change")
    # n1 and n2 were a quorum of three, but are not of the four the change makes.
    assert cluster["n2"].last_index == after
    assert cluster["n1"].commit_index == change - 1
    with pytest.raises(ProposalRefused):
        cluster["n1"].propose_conf_change(ConfChange(ConfChangeKind.REMOVE, "n4"))

    # The other side cannot commit either: n3 knows only the old membership and needs n1 or n2.
    cluster["n3"].campaign()
    cluster.settle()
    assert role(cluster["n3"]) is not Role.LEADER
    assert cluster["n3"].commit_index < change

    cluster.cut = set()
    cluster.tick(["n1"], 2)
    for node in ("n1", "n2", "n3", "n4"):
        assert cluster[node].commit_index == after, node
        assert cluster[node].conf.voters == {"n1", "n2", "n3", "n4"}
    assert [e.data for e in cluster.applied["n4"]][-1] == b"after the change"


def test_a_removed_leader_steps_down_once_its_removal_commits() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    index = cluster["n1"].propose_conf_change(ConfChange(ConfChangeKind.REMOVE, "n1"))
    cluster.settle()
    assert cluster["n2"].commit_index >= index
    assert role(cluster["n1"]) is Role.FOLLOWER
    cluster.tick(["n1"], 3 * ELECTION)
    assert role(cluster["n1"]) is Role.FOLLOWER  # not a voter: it never campaigns


def test_a_learner_receives_the_log_without_voting_and_can_be_promoted() -> None:
    cluster = Cluster(["n1", "n2", "n3"], others=("n4",))
    cluster.elect("n1")
    cluster["n1"].propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n4"))
    cluster.settle()
    index = cluster.propose("n1", b"for the learner too")
    assert cluster["n4"].commit_index == index
    cluster.cut = {"n2", "n3"}
    cluster.propose("n1", b"a learner is no quorum")
    assert cluster["n1"].commit_index == index
    cluster.cut = set()
    cluster.settle()
    cluster["n1"].propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, "n4"))
    cluster.settle()
    assert cluster["n4"].conf.voters == {"n1", "n2", "n3", "n4"}
    assert cluster["n4"].conf.learners == frozenset()


def test_leadership_moves_to_a_lagging_follower_after_it_catches_up() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    term = cluster["n1"].term
    cluster.cut = {"n3"}
    for number in range(3):
        cluster.propose("n1", f"while n3 was away {number}".encode())
    behind = cluster["n1"].last_index
    assert cluster["n3"].last_index < behind
    cluster.cut = set()

    cluster["n1"].transfer_leadership("n3")
    with pytest.raises(ProposalRefused):
        cluster["n1"].propose(b"during the transfer")
    # The appends n3 missed were pipelined optimistically: the next one is past n3's log.
    probe = cluster.take()
    assert probe == [Append("n1", "n3", term, behind, term, (), behind)]
    cluster.deliver(probe)
    rejection = cluster.take()
    assert rejection == [AppendResponse("n3", "n1", term, behind, True, 1, term)]
    cluster.deliver(rejection)
    catch_up = cluster.take()
    assert catch_up == [
        Append("n1", "n3", term, 1, term, cluster["n1"].log_entries[1:], behind)
    ]  # no TimeoutNow before n3 has the log
    cluster.deliver(catch_up)
    acknowledged = cluster.take()
    assert acknowledged == [AppendResponse("n3", "n1", term, behind)]
    cluster.deliver(acknowledged)
    assert cluster.take() == [
        Append("n1", "n3", term, behind, term, (), behind),  # the commit index, now n3 matches
        TimeoutNow("n1", "n3", term),
    ]
    cluster.deliver([TimeoutNow("n1", "n3", term)])
    votes = cluster.take()
    # No pre-vote, and the transfer flag lets n2 vote despite the lease n1 gave it.
    assert sorted(votes, key=lambda m: m.recipient) == [
        Vote("n3", "n1", term + 1, behind, term, transfer=True),
        Vote("n3", "n2", term + 1, behind, term, transfer=True),
    ]
    cluster.deliver(votes)
    responses = cluster.take()
    assert VoteResponse("n2", "n3", term + 1, True) in responses
    cluster.deliver(responses)
    cluster.settle()
    assert role(cluster["n3"]) is Role.LEADER
    assert cluster["n3"].term == term + 1
    assert role(cluster["n1"]) is Role.FOLLOWER
    assert cluster["n1"].leader == "n3"


def test_a_transfer_to_an_unreachable_node_is_abandoned_after_an_election_timeout() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    cluster.cut = {"n3"}
    cluster["n1"].transfer_leadership("n3")
    cluster.tick(["n1", "n2"], ELECTION - 1)
    assert cluster["n1"].transferee == "n3"
    cluster.tick(["n1", "n2"], 1)
    assert cluster["n1"].transferee is None
    assert role(cluster["n1"]) is Role.LEADER
    cluster.propose("n1", b"accepted again")


@pytest.mark.parametrize("pre_vote", [True, False])
def test_pre_vote_keeps_a_flapping_node_from_deposing_a_healthy_leader(pre_vote: bool) -> None:
    cluster = Cluster(["n1", "n2", "n3"], pre_vote=pre_vote)
    cluster.elect("n1")
    term = cluster["n1"].term
    cluster.cut = {"n3"}
    for _ in range(3):  # n3 flaps: cut off for several election timeouts
        cluster.tick(["n1", "n2", "n3"], 2 * ELECTION)
    campaigned = cluster["n3"].term
    cluster.cut = set()
    cluster.tick(["n1", "n2", "n3"], 2)
    if pre_vote:
        assert campaigned == term  # pre-votes nobody answered raised no term
        assert role(cluster["n1"]) is Role.LEADER
        assert cluster["n1"].term == term
        assert cluster["n3"].leader == "n1"
    else:
        assert campaigned > term  # each lonely election raised n3's term
        assert cluster["n1"].term >= campaigned  # its return deposed the healthy leader


def test_followers_in_a_leader_lease_ignore_a_pre_vote() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    term = cluster["n1"].term
    last = cluster["n3"].last_index
    cluster.deliver([PreVote("n3", "n2", term + 1, last, term)])
    assert cluster.take() == []
    cluster.tick(["n2"], ELECTION)  # n2 hears nothing from n1 for an election timeout
    cluster.outbox = []
    cluster.deliver([PreVote("n3", "n2", term + 1, last, term)])
    assert cluster.take() == [PreVoteResponse("n2", "n3", term + 1, True)]
    assert cluster["n2"].term == term  # a pre-vote changes no term


def test_a_read_index_waits_for_a_quorum_to_confirm_the_leader() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    cluster.propose("n1", b"written")
    commit = cluster["n1"].commit_index
    cluster["n1"].read_index(7)
    heartbeats = cluster.take()
    assert sorted(heartbeats, key=lambda m: m.recipient) == [
        Heartbeat("n1", "n2", cluster["n1"].term, commit, 1),
        Heartbeat("n1", "n3", cluster["n1"].term, commit, 1),
    ]
    assert cluster.read_states["n1"] == []
    cluster.deliver(heartbeats[:1])
    answer = cluster.take()
    assert answer == [HeartbeatResponse(heartbeats[0].recipient, "n1", cluster["n1"].term, 1)]
    cluster.deliver(answer)
    cluster.flush("n1")
    assert cluster.read_states["n1"] == [ReadState(7, commit)]


def test_a_new_leader_serves_reads_only_after_committing_an_entry_of_its_term() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster["n1"].campaign()
    for _ in range(4):  # pre-votes, their responses, votes, their responses
        cluster.deliver(cluster.take())
    assert role(cluster["n1"]) is Role.LEADER
    cluster["n1"].read_index(1)
    pending = cluster.take()
    assert not any(isinstance(m, Heartbeat) and m.context for m in pending)
    cluster.deliver(pending)
    cluster.settle()
    assert cluster.read_states["n1"] == [ReadState(1, cluster["n1"].commit_index)]


def test_a_restarted_node_remembers_its_vote_and_votes_once_per_term() -> None:
    cluster = Cluster(["n1", "n2", "n3"], pre_vote=False)
    cluster.deliver([Vote("n1", "n2", 5, 0, 0)])
    assert cluster.take() == [VoteResponse("n2", "n1", 5, True)]
    state = HardState(cluster["n2"].term, "n1", 0)
    restarted = Cluster(["n1", "n2", "n3"], pre_vote=False, restored={"n2": Recovered(state)})
    restarted.deliver([Vote("n3", "n2", 5, 0, 0)])
    assert restarted.take() == [VoteResponse("n2", "n3", 5, False)]
    restarted.deliver([Vote("n1", "n2", 5, 0, 0)])
    assert restarted.take() == [VoteResponse("n2", "n1", 5, True)]


def test_membership_changes_apply_one_node_at_a_time() -> None:
    conf = ConfState(frozenset({"n1", "n2"}), frozenset({"n3"}))
    promoted = ConfChange(ConfChangeKind.ADD_VOTER, "n3").apply_to(conf)
    assert promoted == ConfState(frozenset({"n1", "n2", "n3"}))
    assert ConfChange(ConfChangeKind.REMOVE, "n3").apply_to(conf) == ConfState(
        frozenset({"n1", "n2"})
    )
    with pytest.raises(ValueError, match="already"):
        ConfChange(ConfChangeKind.ADD_LEARNER, "n1").apply_to(conf)
    with pytest.raises(ValueError, match="last voter"):
        ConfChange(ConfChangeKind.REMOVE, "n1").apply_to(ConfState(frozenset({"n1"})))
    assert decode_conf(encode_conf(conf)) == conf


def test_entries_of_an_earlier_term_commit_only_under_an_entry_of_the_current_term() -> None:
    old = log_with_terms([1, 1])
    cluster = Cluster(
        ["n1", "n2", "n3"],
        restored={
            "n1": Recovered(HardState(1), None, old),
            "n2": Recovered(HardState(1), None, old),
        },
    )
    cluster["n1"].campaign()
    for _ in range(4):  # pre-votes, their responses, votes, their responses
        cluster.deliver(cluster.take())
    term = cluster["n1"].term
    assert term == 2
    cluster.take()  # the no-op's appends are lost
    # n2 holds both term-1 entries: a majority has them, yet counting replicas of an earlier
    # term's entry must not commit it (Raft paper, figure 8).
    cluster.deliver([AppendResponse("n2", "n1", term, 2)])
    assert cluster["n1"].commit_index == 0
    cluster.deliver([AppendResponse("n2", "n1", term, 3)])
    assert cluster["n1"].commit_index == 3


def test_a_follower_behind_the_compaction_point_gets_the_snapshot_then_the_rest() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    cluster.cut = {"n3"}
    for number in range(5):
        cluster.propose("n1", f"entry {number}".encode())
    applied = cluster["n1"].applied_index
    snapshot = cluster["n1"].compact(applied, b"state machine as of the last entry")
    cluster.propose("n1", b"after the snapshot")
    cluster.cut = set()
    cluster.tick(["n1"], 1)
    n3 = cluster["n3"]
    assert n3.snapshot == snapshot
    assert n3.first_index == applied + 1
    assert n3.commit_index == cluster["n1"].last_index
    assert [e.data for e in cluster.applied["n3"]][-1] == b"after the snapshot"
    progress = cluster["n1"].progress("n3")
    assert progress is not None
    assert progress.match == cluster["n1"].last_index


def test_a_leader_sends_while_it_persists_and_counts_itself_only_once_durable() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    leader = cluster["n1"]
    index = leader.propose(b"x")
    ready = leader.ready()
    assert ready is not None
    assert ready.must_sync
    assert ready.send_before_sync
    assert {(m.recipient, type(m)) for m in ready.messages} == {("n2", Append), ("n3", Append)}
    # n2 acknowledges before the leader's own write is done: one copy is no quorum of three.
    cluster.deliver([m for m in ready.messages if m.recipient == "n2"])
    follower_ready = cluster["n2"].ready()
    assert follower_ready is not None
    assert follower_ready.must_sync
    assert not follower_ready.send_before_sync
    cluster["n2"].advance(follower_ready)
    cluster.deliver(follower_ready.messages)
    assert leader.commit_index < index
    leader.advance(ready)
    assert leader.commit_index == index


def test_a_hard_state_that_only_moves_the_commit_index_needs_no_sync() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    index = cluster["n1"].propose(b"x")
    for _ in range(3):  # the appends, their acknowledgements, the leader's new commit index
        cluster.deliver(cluster.take())
    ready = cluster["n2"].ready()
    assert ready is not None
    assert ready.hard_state is not None
    assert ready.hard_state.commit == index
    assert [e.index for e in ready.committed] == [index]
    assert not ready.must_sync
    assert not ready.send_before_sync


def test_a_vote_is_synced_before_it_is_sent() -> None:
    cluster = Cluster(["n1", "n2", "n3"], pre_vote=False)
    cluster["n1"].campaign()
    cluster.deliver(cluster.flush("n1"))
    ready = cluster["n2"].ready()
    assert ready is not None
    assert ready.hard_state is not None
    assert ready.hard_state.vote == "n1"
    assert [type(m) for m in ready.messages] == [VoteResponse]
    assert ready.must_sync
    assert not ready.send_before_sync


def test_followers_that_forget_a_dead_leader_elect_without_waiting_out_its_lease() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    cluster.cut = {"n1"}
    cluster["n2"].campaign()
    cluster.settle()
    assert role(cluster["n2"]) is not Role.LEADER  # n3 is in n1's lease: it ignores the pre-vote
    for node in ("n2", "n3"):
        cluster[node].forget_leader()
    assert cluster["n3"].leader is None
    cluster["n2"].campaign()
    cluster.settle()
    assert role(cluster["n2"]) is Role.LEADER
    assert cluster["n3"].leader == "n2"


def test_a_follower_that_forgot_its_leader_follows_it_again_once_it_hears_from_it() -> None:
    cluster = Cluster(["n1", "n2", "n3"])
    cluster.elect("n1")
    cluster["n2"].forget_leader()
    cluster.tick(["n1"], 1)  # a heartbeat
    assert cluster["n2"].leader == "n1"
