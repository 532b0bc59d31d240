"""A deterministic simulation of a Raft cluster under faults, checking Raft's safety properties.

Every run is a function of its seed: nodes, a lossy and reordering network, partitions that come
and go (symmetric and one-way), crash-restarts that lose what was not persisted and tear the last
write, failure detectors that make a node forget its leader (rightly or not), membership
changes, and clients running put/get/cas/delete against a replicated register
map. Run ``python -m tests.kit.raft_sim --seeds N`` for many seeds, ``--seed S`` for one.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from meshmind.raft import (
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryKind,
    HardState,
    Message,
    RaftConfig,
    RaftError,
    RaftNode,
    Ready,
    Recovered,
    Role,
    Snapshot,
)
from tests.kit.linearizability import Operation, OperationKind, check

KEYS = ("x", "y")
KINDS: dict[str, OperationKind] = {"get": "get", "put": "put", "cas": "cas", "delete": "delete"}
ELECTION_TICK = 10
HEARTBEAT_TICK = 2
CLIENT_TIMEOUT = 40
HEAL_CLIENT_TICKS = 20


class SimulationFailure(AssertionError):
    """A safety or liveness property did not hold; the message names the seed."""


@dataclass(frozen=True, slots=True)
class Command:
    """A client operation as it travels through the log."""

    op_id: int
    kind: OperationKind
    key: str
    value: str | None = None
    expected: str | None = None

    def encode(self) -> bytes:
        fields = (str(self.op_id), self.kind, self.key, self.value or "", self.expected or "")
        return "|".join(fields).encode()

    @staticmethod
    def decode(data: bytes) -> Command:
        op_id, kind, key, value, expected = data.decode().split("|")
        return Command(int(op_id), KINDS[kind], key, value or None, expected or None)


def apply_command(store: dict[str, str], command: Command) -> str | bool | None:
    """Run a command on the register map; the client's output (a get's value, a cas' success)."""
    current = store.get(command.key)
    if command.kind == "get":
        return current
    if command.kind == "put":
        assert command.value is not None
        store[command.key] = command.value
        return None
    if command.kind == "delete":
        store.pop(command.key, None)
        return None
    if current != command.expected:
        return False
    assert command.value is not None
    store[command.key] = command.value
    return True


def encode_store(store: dict[str, str]) -> bytes:
    return "\n".join(f"{k}={v}" for k, v in sorted(store.items())).encode()


def decode_store(data: bytes) -> dict[str, str]:
    lines = data.decode().split("\n") if data else []
    return dict(line.split("=", 1) for line in lines)


@dataclass(slots=True)
class Disk:
    """What one node persisted: it survives crashes; anything else does not."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    unsynced: HardState | None = None
    """A hard state written without a sync: the next synced write makes it durable, a crash
    before then may lose it."""

    def sync(self) -> None:
        if self.unsynced is not None:
            self.hard_state, self.unsynced = self.unsynced, None

    def write_entry(self, entry: Entry) -> None:
        first = self.entries[0].index if self.entries else self.next_index
        del self.entries[max(0, entry.index - first) :]
        self.entries.append(entry)

    @property
    def next_index(self) -> int:
        if self.entries:
            return self.entries[-1].index + 1
        return (self.snapshot.meta.index if self.snapshot else 0) + 1

    def write_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.entries = []

    def compact(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.entries = [e for e in self.entries if e.index > snapshot.meta.index]

    def recovered(self) -> Recovered:
        return Recovered(self.hard_state, self.snapshot, tuple(self.entries))


@dataclass(slots=True)
class ClientCall:
    """An operation a client is waiting on."""

    client: int
    command: Command
    call: float
    node: str
    deadline: int


@dataclass(slots=True)
class SimNode:
    """A simulated host: its Raft node (None while crashed), disk and state machine."""

    id: str
    disk: Disk = field(default_factory=Disk)
    raft: RaftNode | None = None
    store: dict[str, str] = field(default_factory=dict)
    applied: int = 0
    restart_at: int = 0
    proposals: dict[int, ClientCall] = field(default_factory=dict)
    reads: dict[int, ClientCall] = field(default_factory=dict)
    reads_at: list[tuple[int, ClientCall]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SimSettings:
    """The fault mix of one run, drawn from its seed."""

    nodes: int
    drop: float
    duplicate: float
    max_delay: int
    fault_rate: float
    torn_rate: float
    clients: int
    conf_change_rate: float
    compact_every: int


@dataclass(slots=True)
class SimResult:
    """What one run did, for reporting."""

    seed: int
    ticks: int
    operations: int
    completed: int
    committed: int
    leaders: int
    crashes: int
    torn_writes: int
    leaders_forgotten: int
    snapshots_installed: int
    membership_changes: int
    index_reads: int


class Simulation:
    """One seeded run."""

    def __init__(self, seed: int, *, ticks: int = 160, heal_ticks: int = 400) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        rng = self.rng
        self.ticks = ticks
        self.heal_ticks = heal_ticks
        self.settings = SimSettings(
            nodes=rng.choice((3, 3, 4, 5, 5, 7)),
            drop=rng.choice((0.0, 0.02, 0.1)),
            duplicate=rng.choice((0.0, 0.02, 0.05)),
            max_delay=rng.choice((1, 2, 4)),
            fault_rate=rng.choice((0.0, 0.02, 0.05)),
            torn_rate=rng.choice((0.0, 0.005, 0.02)),
            clients=rng.choice((2, 3, 4)),
            conf_change_rate=rng.choice((0.0, 0.0, 0.01)),
            compact_every=rng.choice((8, 30, 1000)),
        )
        self.keys = rng.choice((1, 2))
        self.ids = [f"n{i}" for i in range(1, self.settings.nodes + 1)]
        self.nodes = {node_id: SimNode(node_id) for node_id in self.ids}
        self.now = 0
        self.clock = 0.0
        self.healed = False
        self.heal_started = 0
        self._queue: list[tuple[int, int, Message]] = []
        self._sequence = 0
        self.blocked: set[tuple[str, str]] = set()
        self.partition_until = 0
        self.leaders: dict[int, str] = {}
        self.completeness_checked: set[int] = set()
        self.committed: dict[int, Entry] = {}
        self.last_committed = 0
        self.history: list[Operation] = []
        self.calls: dict[int, ClientCall] = {}
        self.client_busy: dict[int, ClientCall | None] = dict.fromkeys(range(self.settings.clients))
        self.client_leader: dict[int, str] = {}
        self.next_op = 1
        self.crashes = 0
        self.torn_writes = 0
        self.leaders_forgotten = 0
        self.snapshots_installed = 0
        self.membership_changes = 0
        self.index_reads = 0
        for node in self.nodes.values():
            self._start(node)

    # ---- the run

    def run(self) -> SimResult:
        for _ in range(self.ticks):
            self._faults()
            self._step_tick()
        self._heal()
        for _ in range(HEAL_CLIENT_TICKS):
            self._step_tick()
        for _ in range(self.heal_ticks):
            if self._converged() is None:
                break
            self._step_tick()
        self._finish_calls()
        self._check_logs()
        problem = self._converged()
        if problem is not None:
            raise self.fail(f"{problem} {self.heal_ticks} ticks after the network healed")
        self._check_linearizable()
        return SimResult(
            self.seed,
            self.now,
            len(self.history),
            sum(1 for op in self.history if op.ret is not None),
            self.last_committed,
            len(self.leaders),
            self.crashes,
            self.torn_writes,
            self.leaders_forgotten,
            self.snapshots_installed,
            self.membership_changes,
            self.index_reads,
        )

    def fail(self, what: str) -> SimulationFailure:
        return SimulationFailure(f"seed {self.seed}, tick {self.now}: {what}")

    def _step_tick(self) -> None:
        self.now += 1
        for node in self.nodes.values():
            if node.raft is None and node.restart_at and self.now >= node.restart_at:
                self._start(node)
        self._clients()
        for node in self.nodes.values():
            if node.raft is not None:
                node.raft.tick()
                self._drain(node)
        self._deliver()
        self._observe()

    # ---- nodes

    def _start(self, node: SimNode) -> None:
        config = RaftConfig(
            id=node.id,
            voters=frozenset(self.ids),
            rng=random.Random(self.rng.getrandbits(32)),
            election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK,
            max_append_entries=self.rng.choice((1, 4, 64)),
            max_inflight=self.rng.choice((1, 4, 64)),
        )
        node.raft = RaftNode(config, restored=node.disk.recovered())
        snapshot = node.disk.snapshot
        node.store = decode_store(snapshot.data) if snapshot else {}
        node.applied = snapshot.meta.index if snapshot else 0
        node.restart_at = 0

    def _crash(self, node: SimNode, down_for: int) -> None:
        if self.rng.random() < 0.5:
            node.disk.sync()  # the system wrote back what was not synced yet
        node.disk.unsynced = None
        node.raft = None
        node.restart_at = self.now + down_for
        node.proposals.clear()
        node.reads.clear()
        node.reads_at.clear()
        self.crashes += 1

    def _drain(self, node: SimNode) -> None:
        for _ in range(100):
            if node.raft is None:
                return
            ready = node.raft.ready()
            if ready is None:
                return
            self._handle_ready(node, node.raft, ready)
        raise self.fail(f"{node.id} never ran out of work")

    def _handle_ready(self, node: SimNode, raft: RaftNode, ready: Ready) -> None:
        disk = node.disk
        torn = not self.healed and self.rng.random() < self.settings.torn_rate
        if ready.send_before_sync:
            for message in ready.messages:
                self._send(message)
        if ready.snapshot is not None:
            disk.write_snapshot(ready.snapshot)
        if torn:
            kept = self.rng.randrange(len(ready.entries) + 1)
            for entry in ready.entries[:kept]:
                disk.write_entry(entry)
            if kept == len(ready.entries) and ready.hard_state and self.rng.random() < 0.5:
                disk.unsynced = ready.hard_state
            self.torn_writes += 1
            self._crash(node, self.rng.randrange(1, 30))
            return
        for entry in ready.entries:
            disk.write_entry(entry)
        if ready.hard_state is not None:
            disk.unsynced = ready.hard_state
        if ready.must_sync:
            disk.sync()
        if not ready.send_before_sync:
            for message in ready.messages:
                self._send(message)
        if ready.snapshot is not None:
            self.snapshots_installed += 1
            node.store = decode_store(ready.snapshot.data)
            node.applied = ready.snapshot.meta.index
            node.reads_at.clear()
        for entry in ready.committed:
            self._apply(node, entry)
        for read in ready.read_states:
            call = node.reads.pop(read.request_id, None)
            if call is not None:
                node.reads_at.append((read.index, call))
        self._serve_reads(node)
        raft.advance(ready)
        if raft.applied_index - raft.first_index >= self.settings.compact_every:
            disk.compact(raft.compact(raft.applied_index, encode_store(node.store)))

    def _apply(self, node: SimNode, entry: Entry) -> None:
        if entry.index != node.applied + 1:
            raise self.fail(f"{node.id} applies {entry.index} after {node.applied}")
        known = self.committed.setdefault(entry.index, entry)
        self.last_committed = max(self.last_committed, entry.index)
        if known != entry:
            raise self.fail(f"{node.id} applies {entry} where {known} was committed")
        node.applied = entry.index
        if entry.kind is not EntryKind.NORMAL:
            return
        command = Command.decode(entry.data)
        output = apply_command(node.store, command)
        call = node.proposals.pop(command.op_id, None)
        if call is not None:
            self._complete(call, output)

    def _serve_reads(self, node: SimNode) -> None:
        waiting = []
        for index, call in node.reads_at:
            if index <= node.applied:
                self.index_reads += 1
                self._complete(call, node.store.get(call.command.key))
            else:
                waiting.append((index, call))
        node.reads_at = waiting

    # ---- network

    def _send(self, message: Message) -> None:
        settings = self.settings
        random = self.rng.random
        copies = 1
        if not self.healed:
            if settings.drop and random() < settings.drop:
                return
            if settings.duplicate and random() < settings.duplicate:
                copies = 2
        for _ in range(copies):
            delay = 1 + int(random() * settings.max_delay)
            self._sequence += 1
            heapq.heappush(self._queue, (self.now + delay, self._sequence, message))

    def _deliver(self) -> None:
        queue = self._queue
        blocked = self.blocked
        touched: dict[str, SimNode] = {}
        while queue and queue[0][0] <= self.now:
            _, _, message = heapq.heappop(queue)
            if blocked and (message.sender, message.recipient) in blocked:
                continue
            node = self.nodes[message.recipient]
            if node.raft is None:
                continue
            node.raft.step(message)
            touched[node.id] = node
        for node in touched.values():
            self._drain(node)

    # ---- faults

    def _faults(self) -> None:
        rng = self.rng
        if self.blocked and self.now >= self.partition_until:
            self.blocked.clear()
        if rng.random() >= self.settings.fault_rate:
            return
        fault = rng.randrange(5)
        if fault == 0:
            side = set(rng.sample(self.ids, rng.randrange(1, len(self.ids) // 2 + 1)))
            self.blocked = {
                (a, b) for a in self.ids for b in self.ids if (a in side) != (b in side)
            }
            self.partition_until = self.now + rng.randrange(10, 80)
        elif fault == 1:
            sender = rng.choice(self.ids)
            others = [i for i in self.ids if i != sender]
            self.blocked = {(sender, b) for b in rng.sample(others, rng.randrange(1, len(others)))}
            if rng.random() < 0.5:
                self.blocked = {(b, a) for a, b in self.blocked}
            self.partition_until = self.now + rng.randrange(10, 80)
        elif fault == 2:  # a failure detector, right or wrong, says the leader is gone
            raft = self.nodes[rng.choice(self.ids)].raft
            if raft is not None:
                raft.forget_leader()
                if rng.random() < 0.5:
                    raft.campaign()
                self.leaders_forgotten += 1
        else:
            node = self.nodes[rng.choice(self.ids)]
            if node.raft is not None:
                self._crash(node, rng.randrange(1, 40))

    def _heal(self) -> None:
        self.healed = True
        self.heal_started = self.now
        self.blocked.clear()
        for node in self.nodes.values():
            if node.raft is None:
                self._start(node)

    # ---- clients

    @property
    def clients_done(self) -> bool:
        return self.healed and self.now > self.heal_started + HEAL_CLIENT_TICKS

    def _clients(self) -> None:
        for client, call in self.client_busy.items():
            if call is not None:
                if self.now >= call.deadline:
                    self._give_up(call)
                continue
            if not self.clients_done and self.rng.random() < 0.3:
                self._invoke(client)
        if not self.healed and self.rng.random() < self.settings.conf_change_rate:
            self._change_membership()

    def _invoke(self, client: int) -> None:
        rng = self.rng
        target = self.client_leader.get(client) or rng.choice(self.ids)
        node = self.nodes[target]
        if node.raft is None:
            self.client_leader.pop(client, None)
            return
        key = rng.choice(KEYS[: self.keys])
        kind: OperationKind = rng.choice(("get", "get", "put", "put", "cas", "delete"))
        value = f"v{self.next_op}" if kind in ("put", "cas") else None
        expected = None
        if kind == "cas":
            expected = (
                node.store.get(key) if rng.random() < 0.7 else f"v{rng.randrange(self.next_op)}"
            )
        command = Command(self.next_op, kind, key, value, expected)
        call = ClientCall(client, command, self.clock, target, self.now + CLIENT_TIMEOUT)
        via_read_index = kind == "get" and rng.random() < 0.7
        try:
            if via_read_index:
                node.raft.read_index(command.op_id)
            else:
                node.raft.propose(command.encode())
        except RaftError:
            leader = node.raft.leader
            if leader is None:
                self.client_leader.pop(client, None)
            else:
                self.client_leader[client] = leader
            return
        self.clock += 1
        self.next_op += 1
        (node.reads if via_read_index else node.proposals)[command.op_id] = call
        self.client_busy[client] = call
        self._drain(node)

    def _complete(self, call: ClientCall, output: str | bool | None) -> None:
        if self.client_busy.get(call.client) is not call:
            return
        self.clock += 1
        self._record(call, self.clock, output)
        self.client_busy[call.client] = None

    def _give_up(self, call: ClientCall) -> None:
        node = self.nodes[call.node]
        node.proposals.pop(call.command.op_id, None)
        node.reads.pop(call.command.op_id, None)
        node.reads_at = [(i, c) for i, c in node.reads_at if c is not call]
        self._record(call, None, None)
        self.client_busy[call.client] = None
        self.client_leader.pop(call.client, None)

    def _finish_calls(self) -> None:
        for call in self.client_busy.values():
            if call is not None:
                self._record(call, None, None)

    def _record(self, call: ClientCall, ret: float | None, output: str | bool | None) -> None:
        command = call.command
        self.history.append(
            Operation(
                call.client,
                call.call,
                ret,
                command.kind,
                command.key,
                command.value,
                command.expected,
                output,
            )
        )

    def _change_membership(self) -> None:
        leader = next(
            (n.raft for n in self.nodes.values() if n.raft and n.raft.role is Role.LEADER), None
        )
        if leader is None:
            return
        conf = leader.conf
        outsiders = [i for i in self.ids if i not in conf.members]
        choices: list[ConfChange] = [ConfChange(ConfChangeKind.ADD_LEARNER, i) for i in outsiders]
        choices += [ConfChange(ConfChangeKind.ADD_VOTER, i) for i in sorted(conf.learners)]
        if len(conf.voters) >= 3:
            choices += [ConfChange(ConfChangeKind.REMOVE, i) for i in sorted(conf.members)]
        if not choices:
            return
        try:
            leader.propose_conf_change(self.rng.choice(choices))
        except RaftError:
            return
        self.membership_changes += 1
        self._drain(self.nodes[leader.id])

    # ---- checks

    def _observe(self) -> None:
        """Election safety and leader completeness, and the growing set of committed entries."""
        for node in self.nodes.values():
            raft = node.raft
            if raft is None:
                continue
            if raft.commit_index > self.last_committed:
                entries = raft.log_entries
                for index in range(self.last_committed + 1, raft.commit_index + 1):
                    if index >= raft.first_index:
                        self.committed.setdefault(index, entries[index - raft.first_index])
                self.last_committed = raft.commit_index
            if raft.role is not Role.LEADER:
                continue
            holder = self.leaders.setdefault(raft.term, raft.id)
            if holder != raft.id:
                raise self.fail(f"two leaders in term {raft.term}: {holder} and {raft.id}")
            if raft.term in self.completeness_checked:
                continue
            self.completeness_checked.add(raft.term)
            for index in range(raft.first_index, self.last_committed + 1):
                entry = self.committed.get(index)
                if entry is not None and raft.term_at(index) != entry.term:
                    raise self.fail(f"leader {raft.id} (term {raft.term}) lacks committed {entry}")

    def _check_logs(self) -> None:
        """Log matching: equal (index, term) means equal entries and equal prefixes."""
        seen: dict[tuple[int, int], Entry] = {}
        rafts = [n.raft for n in self.nodes.values() if n.raft is not None]
        for raft in rafts:
            for entry in raft.log_entries:
                known = seen.setdefault((entry.index, entry.term), entry)
                if known != entry:
                    raise self.fail(f"{raft.id} has {entry}, another node {known}")
        for a in rafts:
            for b in rafts:
                if a.id >= b.id:
                    continue
                low = max(a.first_index, b.first_index)
                high = min(a.last_index, b.last_index)
                for index in range(high, low - 1, -1):
                    if a.term_at(index) == b.term_at(index):
                        for earlier in range(low, index):
                            if a.term_at(earlier) != b.term_at(earlier):
                                raise self.fail(f"{a.id} and {b.id} match at {index} not {earlier}")
                        break

    def _converged(self) -> str | None:
        """Liveness: one leader that every member follows, everything committed and applied;
        None if so, else what is missing."""
        leaders = [n.raft for n in self.nodes.values() if n.raft and n.raft.role is Role.LEADER]
        if not leaders:
            return "no leader"
        leader = max(leaders, key=lambda raft: raft.term)
        for member in leader.conf.members:
            raft = self.nodes[member].raft
            if raft is None:
                return f"{member} is down"
            if raft.id != leader.id and raft.leader != leader.id:
                return f"{member} does not follow {leader.id}"
            if raft.applied_index != leader.last_index:
                return f"{member} applied {raft.applied_index} of {leader.last_index}"
        if any(call is not None for call in self.client_busy.values()):
            return "a client call is still pending"
        return None

    def _check_linearizable(self) -> None:
        result = check(self.history)
        if not result.ok:
            raise self.fail(result.explain())


def run_seed(seed: int) -> SimResult:
    """Run one seed; raises :class:`SimulationFailure` naming it if a property breaks."""
    return Simulation(seed).run()


def run_seeds(first: int, count: int) -> Iterator[SimResult]:
    for seed in range(first, first + count):
        yield run_seed(seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run seeded Raft simulations.")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, help="run just this seed, verbosely")
    args = parser.parse_args(argv)
    if args.seed is not None:
        result = run_seed(args.seed)
        print(result)
        return 0
    started = time.perf_counter()
    failures = 0
    for done, seed in enumerate(range(args.first, args.first + args.seeds), 1):
        try:
            run_seed(seed)
        except SimulationFailure as failure:
            failures += 1
            print(f"FAILED {failure}", file=sys.stderr, flush=True)
        if done % 1000 == 0:
            elapsed = time.perf_counter() - started
            print(f"{done} seeds, {failures} failed, {done / elapsed:.1f} seeds/s", flush=True)
    elapsed = time.perf_counter() - started
    print(
        f"{args.seeds} seeds from {args.first}: {failures} failed, "
        f"{elapsed:.1f} s, {args.seeds / elapsed:.1f} seeds/s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
