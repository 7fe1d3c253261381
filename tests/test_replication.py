"""The driver: persist -> send -> apply -> advance, group commit, request
outcomes (ok / NoLeader / OutcomeUnknown), on a fake clock with in-memory
stores and an in-memory network."""

from __future__ import annotations

import random

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from dkv.commands import RequestId, encode_put
from dkv.errors import NoLeader, OutcomeUnknown
from dkv.mvcc import MvccStore, MvccView
from dkv.pb.etcd_rpc_pb2 import PutRequest, RangeRequest
from dkv.raft import RaftConfig, Role
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import AppendEntries, AppendResponse, Entry, Message, RequestVote, VoteResponse
from dkv.replication import DriverConfig, ReplicationService
from dkv.replication.service import COMMIT_FLUSH_SECONDS, HELD_FLUSH_SECONDS
from dkv.storage import WriteBatch
from dkv.storage.memory import MemoryStore

TICK = 0.01


class Network:
    """Delivers sent messages to the addressed driver on the next clock turn."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.nodes: dict[str, ReplicationService] = {}
        self.sent: list[Message] = []
        self.down: set[str] = set()
        #: Nodes that were told they were removed (see test_membership).
        self.removed: list[str] = []
        #: Nodes whose incoming messages wait (in order) until ``release``.
        self.held: set[str] = set()
        self._held_messages: list[Message] = []
        #: Directed links (frm, to) whose transport is not up: it drops
        #: their messages unsent and says so (``Transport.send``).
        self.not_up: set[tuple[str, str]] = set()

    def transport(self, node_id: str) -> NetTransport:
        return NetTransport(self, node_id)

    def deliver(self, messages) -> None:
        for m in messages:
            self.sent.append(m)
            if self._arrives(m):
                if m.to in self.held:
                    self._held_messages.append(m)
                else:
                    self.clock.callLater(0, self.nodes[m.to].receive, [m])

    def release(self, node_id: str) -> None:
        """Deliver what waited for node_id, in order and in one call (as the
        peer transport hands over the batches one read brings), and stop
        holding it."""
        self.held.discard(node_id)
        waiting = [m for m in self._held_messages if m.to == node_id]
        self._held_messages = [m for m in self._held_messages if m.to != node_id]
        self.sent.extend(waiting)
        live = [m for m in waiting if self._arrives(m)]
        if live:
            self.clock.callLater(0, self.nodes[node_id].receive, live)

    def _arrives(self, m: Message) -> bool:
        """m's addressee is a node here, and neither end is down."""
        return m.to in self.nodes and m.to not in self.down and m.frm not in self.down


class NetTransport:
    def __init__(self, net: Network, node_id: str) -> None:
        self.net = net
        self.node_id = node_id
        self.peers: dict[str, str] = {}

    def send(self, messages) -> list[Message]:
        unsent = [m for m in messages if (m.frm, m.to) in self.net.not_up]
        self.net.deliver([m for m in messages if (m.frm, m.to) not in self.net.not_up])
        return unsent

    def set_peers(self, addresses) -> None:
        self.peers = dict(addresses)


class GatedStore(MemoryStore):
    """A MemoryStore whose writes complete only when the test says so."""

    def __init__(self, log_apart: bool = False) -> None:
        super().__init__(log_apart=log_apart)
        self.gated = False
        self.pending: list[tuple[Deferred, WriteBatch]] = []

    def write(self, batch):
        if not self.gated:
            return super().write(batch)
        d: Deferred = Deferred()
        self.pending.append((d, batch))
        return d

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for d, batch in pending:
            super().write(batch).chainDeferred(d)


def make(node_ids, clock: Clock, net: Network, timeout: float = 1.0, stores=None, defer_commit: bool = False):
    members = Membership(tuple(Member(i, f"127.0.0.1:{7000 + n}") for n, i in enumerate(node_ids)))
    services = {}
    for n, node_id in enumerate(node_ids):
        store = (stores or {}).get(node_id) or MemoryStore()
        state = store.load() or store.bootstrap("cid", members)
        svc = ReplicationService(
            node_id=node_id,
            state=state,
            store=store,
            transport=net.transport(node_id),
            clock=clock,
            rng=random.Random(n),
            config=DriverConfig(
                raft=RaftConfig(election_ticks=10, heartbeat_ticks=1, defer_commit=defer_commit),
                tick_seconds=TICK,
                request_timeout=timeout,
                first_election_ticks=2 if n == 0 else None,
            ),
        )
        net.nodes[node_id] = svc
        services[node_id] = svc
        svc.startService()
    return services


def pump(clock: Clock, seconds: float) -> None:
    for _ in range(int(seconds / TICK)):
        clock.advance(0)
        clock.advance(TICK)
        clock.advance(0)


def put(svc: ReplicationService, key: bytes, value: bytes) -> Deferred:
    rid = svc.next_request_id()
    return svc.propose(rid, encode_put(rid, key, value))


def outcome(d: Deferred):
    results: list = []
    d.addBoth(results.append)
    return results


def stored(store, key: bytes) -> bytes | None:
    """The value of key in store's durable state (not the driver's overlay)."""
    with store.reading() as tables:
        kvs = MvccView(tables).range(RangeRequest(key=key)).kvs
    return kvs[0].value if kvs else None


def ok(results: list) -> bool:
    """A write's outcome list holds one success (its response)."""
    return len(results) == 1 and not isinstance(results[0], Failure)


def leader_of(services) -> ReplicationService:
    leaders = [s for s in services.values() if s.raft.role is Role.LEADER]
    assert len(leaders) == 1, [s.raft.role for s in services.values()]
    return leaders[0]


def test_single_node_write_is_applied_and_acknowledged() -> None:
    clock = Clock()
    net = Network(clock)
    svc = make(["a"], clock, net)["a"]
    pump(clock, 0.1)
    assert svc.raft.role is Role.LEADER
    result = outcome(put(svc, b"k", b"v"))
    pump(clock, 0.05)
    assert ok(result)
    pump(clock, HELD_FLUSH_SECONDS)  # its apply, held, gets a transaction
    assert stored(svc._store, b"k") == b"v"


def test_proposals_of_one_turn_share_one_write() -> None:
    """Group commit: 100 proposals made in one reactor turn are appended and
    made durable by one store transaction."""
    clock = Clock()
    net = Network(clock)
    store = GatedStore()
    svc = make(["a"], clock, net, stores={"a": store})["a"]
    pump(clock, 0.1)
    store.gated = True
    results = [outcome(put(svc, b"k%d" % i, b"v")) for i in range(100)]
    clock.advance(0)
    assert len(store.pending) == 1
    assert len(store.pending[0][1].entries) == 100
    store.gated = False
    store.release()
    pump(clock, 0.05)
    assert all(ok(r) for r in results)


def test_ready_messages_leave_only_after_the_write() -> None:
    """A granted vote promises the voter's disk: it must not be sent before
    the hard state with the vote is durable (Raft §5.2)."""
    clock = Clock()
    net = Network(clock)
    store = GatedStore()
    services = make(["a", "b", "c"], clock, net, stores={"b": store})
    b = services["b"]
    store.gated = True
    b.receive([RequestVote(frm="c", to="b", term=5, last_index=1, last_term=1)])
    clock.advance(0)
    assert store.pending, "the vote must be written first"
    granted = [m for m in net.sent if isinstance(m, VoteResponse) and m.frm == "b" and m.granted]
    assert granted == []
    store.release()
    clock.advance(0)
    granted = [m for m in net.sent if isinstance(m, VoteResponse) and m.frm == "b" and m.granted]
    assert len(granted) == 1 and granted[0].term == 5
    assert store.hard_state.vote == "c" and store.hard_state.term == 5


def test_three_nodes_elect_the_first_and_replicate() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net)
    pump(clock, 0.3)
    assert leader_of(services).node_id == "a"
    result = outcome(put(services["b"], b"k", b"v"))  # forwarded to the leader
    pump(clock, 0.1)
    assert ok(result)
    for svc in services.values():
        assert stored(svc._store, b"k") == b"v"


def _led_cluster(**options):
    """Three nodes, pumped until one leads. (clock, net, services, leader)"""
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, **options)
    pump(clock, 0.3)
    return clock, net, services, leader_of(services)


def _acks_held_at_the_leader(more: bool):
    """Three nodes; a put on the leader whose acknowledgements wait (held),
    and, if more, a second put made after them. (clock, leader, the acks,
    the first put's outcome)"""
    clock, net, _, leader = _led_cluster()
    net.held.add(leader.node_id)
    first = outcome(put(leader, b"k1", b"v1"))
    for _ in range(5):
        clock.advance(0)
    acks = [m for m in net._held_messages if isinstance(m, AppendResponse) and m.index >= leader.raft.log.last_index()]
    assert acks and first == []
    if more:
        put(leader, b"k2", b"v2")
    return clock, leader, acks, first


def test_a_ready_that_leaves_nothing_to_do_schedules_no_turn() -> None:
    """The leader's turn that proposes and stores a write leaves nothing for
    another turn until the acknowledgements come: none is scheduled; the
    first acknowledgement runs the one that answers."""
    clock, net, _, leader = _led_cluster()
    net.held.add(leader.node_id)
    turns: list[None] = []
    turn = leader._process
    leader._process = lambda: (turns.append(None), turn())[-1]  # type: ignore[method-assign]
    result = outcome(put(leader, b"k", b"v"))
    clock.advance(0)  # the turn: proposed, sent, stored; and nothing else
    assert leader.raft.log.stable == leader.raft.log.last_index()
    assert len(turns) == 1 and result == []
    net.release(leader.node_id)
    for _ in range(3):
        clock.advance(0)
    assert ok(result)


def test_an_acknowledgement_that_commits_is_answered_in_its_own_turn() -> None:
    """A leader that steps an acknowledgement committing entries applies
    and answers them at once, not after the rest of the turn, when no
    client request of the turn waits to join a proposal."""
    clock, leader, acks, first = _acks_held_at_the_leader(more=False)
    leader.receive(acks[:1])
    assert ok(first)


def test_an_error_in_a_turn_run_at_once_does_not_reach_the_transport() -> None:
    """The turn an acknowledgement runs at once is logged if it raises, as a
    turn run soon is; the transport's connection never sees the error."""
    clock, leader, acks, first = _acks_held_at_the_leader(more=False)

    def broken() -> None:
        raise RuntimeError("a bug in the turn")

    leader._process = broken  # type: ignore[method-assign]
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        leader.receive(acks[:1])  # does not raise
    finally:
        globalLogPublisher.removeObserver(events.append)
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1 and isinstance(failures[0]["log_failure"].value, RuntimeError)


def test_an_acknowledgement_that_commits_waits_for_the_turns_new_requests() -> None:
    """With a client request of this turn waiting, the acknowledgement is
    processed on the next turn with it (one proposal for the turn)."""
    clock, leader, acks, first = _acks_held_at_the_leader(more=True)
    leader.receive(acks[:1])
    assert first == []
    clock.advance(0)
    assert ok(first)


def test_a_commit_index_held_back_reaches_the_followers_within_the_flush_time() -> None:
    """With defer_commit, a trickle of writes tells the followers each commit
    index with the next write's append (no commit-only message); the last
    one, with no write after it, leaves on its own within
    COMMIT_FLUSH_SECONDS (before any heartbeat: one per 10 ms here)."""
    clock, net, services, leader = _led_cluster(defer_commit=True)
    followers = [s for s in services.values() if s is not leader]
    before = len(net.sent)

    def commit_only() -> list[Message]:
        return [m for m in net.sent[before:] if isinstance(m, AppendEntries) and m.commit_only]

    for i in range(4):
        result = outcome(put(leader, b"k%d" % i, b"v"))
        for _ in range(10):
            clock.advance(0)
        assert ok(result)
        clock.advance(COMMIT_FLUSH_SECONDS / 2)
        if i:
            assert all(f.raft.commit_index == leader.raft.commit_index - 1 for f in followers)
    assert commit_only() == []
    clock.advance(COMMIT_FLUSH_SECONDS / 2)
    for _ in range(5):
        clock.advance(0)
    assert all(f.raft.commit_index == leader.raft.commit_index for f in followers)
    assert {m.to for m in commit_only()} == {f.node_id for f in followers}


def test_linearizable_read_barrier_on_follower() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net)
    pump(clock, 0.3)
    outcome(put(services["a"], b"k", b"v"))
    barrier = outcome(services["c"].read_barrier())
    pump(clock, 0.1)
    assert barrier == [None]
    assert stored(services["c"]._store, b"k") == b"v"


def test_reads_released_together_share_one_view_of_the_applied_state() -> None:
    """The reads one ReadIndex answer releases are served from one view of
    the applied state, opened once for them; a view asked outside a release
    is a view of its own."""
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net)
    pump(clock, 0.3)
    a = leader_of(services)
    written = outcome(put(a, b"k", b"v"))
    pump(clock, 0.1)
    assert ok(written)
    seen: list = []

    def read(_):
        with a.view() as state:
            seen.append((state, state.value(b"k")))

    for _ in range(5):
        a.read_barrier().addCallback(read)
    pump(clock, 0.1)
    assert [value for _, value in seen] == [b"v"] * 5
    assert all(state is seen[0][0] for state, _ in seen)
    with a.view() as own:
        assert own is not seen[0][0]
    assert a._shared_view is None


def test_reads_released_by_an_apply_see_what_it_applied() -> None:
    """What waits for an index to be applied (a follower's read at its read
    index, ``wait_applied``) is released within the apply, on the one shared
    view: that view holds the writes just applied."""
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net)
    pump(clock, 0.3)
    a = leader_of(services)
    b = services["b"] if a is not services["b"] else services["c"]
    outcome(put(a, b"k", b"old"))
    pump(clock, 0.1)
    index = a.raft.log.last_index() + 1  # where the next write goes
    written = outcome(put(a, b"k", b"new"))
    assert a.applied < index and b.applied < index
    values: list = []
    b.wait_applied(index).addCallback(lambda _: values.append(b.read(b"k")))
    a.wait_applied(index).addCallback(lambda _: values.append(a.read(b"k")))
    pump(clock, 0.1)
    assert ok(written)
    assert values == [b"new", b"new"]


def test_without_a_leader_requests_wait_then_fail_with_no_leader() -> None:
    """No leader is ever known: writes and linearizable reads wait for one
    until their deadline, then fail with NoLeader; nothing was appended."""
    clock = Clock()
    net = Network(clock)
    net.down = {"a", "b", "c"}
    services = make(["a", "b", "c"], clock, net, timeout=1.0)
    pump(clock, 0.05)
    b = services["b"]
    last = b.raft.log.last_index()
    result = outcome(put(b, b"k", b"v"))
    read = outcome(b.read_barrier())
    pump(clock, 0.9)
    assert result == [] and read == []
    pump(clock, 0.2)
    assert len(result) == 1 and result[0].check(NoLeader) and result[0].value.message == "no leader"
    assert len(read) == 1 and read[0].check(NoLeader) and read[0].value.message == "no leader"
    assert b.raft.log.last_index() == last
    assert not b.requests._pending and not b.requests.has_new_writes and not b.requests.has_new_reads


def test_requests_during_an_election_wait_for_the_new_leader() -> None:
    """The leader vanishes; what a follower is asked while no leader is known
    is served once the next one is elected, not refused."""
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, timeout=5.0)
    pump(clock, 0.3)
    assert leader_of(services).node_id == "a"
    net.down = {"a", "c"}  # c only for a while: b must find itself without a leader
    b = services["b"]
    pump(clock, 0.5)
    assert b.raft.leader is None and b.raft.role is Role.PRE_CANDIDATE
    result = outcome(put(b, b"k", b"v"))
    read = outcome(b.read_barrier())
    pump(clock, 0.1)
    assert result == [] and read == []
    net.down = {"a"}
    pump(clock, 1.0)
    assert b.raft.leader in ("b", "c")
    assert ok(result) and read == [None]
    assert stored(b._store, b"k") == b"v"


def test_writes_during_a_leadership_transfer_wait_for_the_new_leader() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, timeout=5.0)
    pump(clock, 0.3)
    a = services["a"]
    assert leader_of(services) is a
    transfer = outcome(a.transfer_leadership("c"))
    result = outcome(put(a, b"k", b"v"))  # a refuses new entries until c leads
    pump(clock, 0.5)
    assert transfer == ["c"] and ok(result)
    assert stored(services["c"]._store, b"k") == b"v"


def test_forwarded_write_without_answer_is_outcome_unknown() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, timeout=0.5)
    pump(clock, 0.3)
    assert leader_of(services).node_id == "a"
    net.down = {"a"}  # the leader vanishes after b forwarded
    result = outcome(put(services["b"], b"k", b"v"))
    clock.advance(0)
    assert result == []
    clock.advance(0.5)
    assert result[0].check(OutcomeUnknown)


def test_a_forward_the_transport_did_not_send_is_retried_until_the_link_is_up() -> None:
    """b follows a but its link to a is not up yet (it hears a's heartbeats
    on a's link): the forward is dropped unsent, so it is proposed again each
    tick and applied once the link comes up, once."""
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, timeout=1.0)
    pump(clock, 0.3)
    assert leader_of(services).node_id == "a"
    net.not_up = {("b", "a")}
    sent_before = len(net.sent)
    result = outcome(put(services["b"], b"k", b"v"))
    pump(clock, 0.3)
    assert result == [] and services["b"].raft.leader == "a"
    net.not_up = set()
    pump(clock, 0.3)
    assert ok(result)
    assert all(stored(svc._store, b"k") == b"v" for svc in services.values())
    delivered = [m for m in net.sent[sent_before:] if type(m).__name__ == "Propose" and m.frm == "b"]
    assert len(delivered) == 1, "never sent twice"


def test_a_forward_never_sent_by_its_deadline_is_no_leader_not_outcome_unknown() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, timeout=0.5)
    pump(clock, 0.3)
    net.not_up = {("b", "a")}
    write = outcome(put(services["b"], b"k", b"v"))
    read = outcome(services["b"].read_barrier())
    pump(clock, 0.6)
    assert write and write[0].check(NoLeader), "certainly not applied: 503, safe to retry"
    assert read and read[0].check(NoLeader)
    assert all(stored(svc._store, b"k") is None for svc in services.values())


def test_minority_leader_answers_outcome_unknown_and_steps_down() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, timeout=0.5)
    pump(clock, 0.3)
    a = leader_of(services)
    net.down = {"b", "c"}
    result = outcome(put(a, b"k", b"v"))
    pump(clock, 0.6)
    assert result[0].check(OutcomeUnknown)
    pump(clock, 0.3)
    assert a.raft.role is not Role.LEADER  # CheckQuorum
    later = outcome(put(a, b"k2", b"v"))  # waits for a leader, in vain
    pump(clock, 0.6)
    assert later and later[0].check(NoLeader)


def test_a_refused_forward_is_retried_each_tick_until_a_leader_takes_it() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net)
    pump(clock, 0.3)
    b = services["b"]
    # b believes a leads, but a has just stepped down: it refuses the forward.
    services["a"].raft._become_follower(services["a"].raft.term, None)
    sent_before = len(net.sent)
    result = outcome(put(b, b"k", b"v"))
    for _ in range(3):
        clock.advance(0)
    refusals = [m for m in net.sent[sent_before:] if type(m).__name__ == "ProposeRejected"]
    assert len(refusals) == 1 and result == []  # held for the next tick, not bounced back at once
    pump(clock, 1.0)
    assert ok(result)
    assert all(stored(svc._store, b"k") == b"v" for svc in services.values())
    forwards = [m for m in net.sent[sent_before:] if type(m).__name__ == "Propose" and m.frm == "b"]
    assert len(forwards) <= 1 + 1.0 / TICK  # at most one retry per tick


def test_a_read_a_deposed_leader_dropped_is_retried() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, timeout=5.0)
    pump(clock, 0.3)
    a = leader_of(services)
    net.down = {"b", "c"}  # a cannot confirm the read, then loses leadership (CheckQuorum)
    read = outcome(a.read_barrier())
    pump(clock, 0.3)
    assert a.raft.role is not Role.LEADER and read == []
    net.down = set()
    pump(clock, 1.0)
    assert read == [None]


def test_stop_fails_waiting_requests() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net)
    pump(clock, 0.3)
    net.down = {"b", "c"}
    a = leader_of(services)
    w = outcome(put(a, b"k", b"v"))
    r = outcome(a.read_barrier())
    clock.advance(0)
    a.stopService()
    assert w[0].check(OutcomeUnknown)
    assert r[0].check(NoLeader)
    late = outcome(put(a, b"k", b"v"))
    assert late[0].check(NoLeader)


def test_cancelled_request_does_not_break_the_driver() -> None:
    clock = Clock()
    net = Network(clock)
    svc = make(["a"], clock, net)["a"]
    pump(clock, 0.1)
    d = put(svc, b"k", b"v")
    d.addErrback(lambda f: None)
    d.cancel()  # e.g. the HTTP client went away
    pump(clock, 0.05 + HELD_FLUSH_SECONDS)
    assert stored(svc._store, b"k") == b"v"  # the write itself still happened
    later = outcome(put(svc, b"k2", b"v"))
    pump(clock, 0.05 + HELD_FLUSH_SECONDS)
    assert ok(later)
    assert stored(svc._store, b"k2") == b"v"


def test_persist_failure_is_fatal() -> None:
    clock = Clock()
    net = Network(clock)
    store = MemoryStore()
    fatal: list = []
    members = Membership((Member("a", "x:1"),))
    state = store.bootstrap("cid", members)
    svc = ReplicationService(
        node_id="a",
        state=state,
        store=store,
        transport=net.transport("a"),
        clock=clock,
        rng=random.Random(1),
        on_fatal=fatal.append,
        config=DriverConfig(tick_seconds=TICK, request_timeout=1, first_election_ticks=1),
    )
    store.write = lambda batch: fail(OSError("disk full"))
    svc.startService()
    pump(clock, 0.05)
    assert fatal and fatal[0].check(OSError)


@pytest.mark.parametrize("seed", range(5))
def test_leader_crash_and_restart_keeps_acknowledged_writes(seed: int) -> None:
    clock = Clock()
    net = Network(clock)
    stores = {i: MemoryStore() for i in "abc"}
    services = make(["a", "b", "c"], clock, net, stores=stores)
    pump(clock, 0.3)
    acked = []
    for i in range(20):
        d = put(services[random.Random(seed * 100 + i).choice("abc")], b"k%d" % i, b"v%d" % i)
        d.addCallback(lambda _, i=i: acked.append(i))
        d.addErrback(lambda f: None)
        pump(clock, 0.02)
    old = leader_of(services)
    old.stopService()  # crash: its store keeps only what was written
    net.down = {old.node_id}
    pump(clock, 0.5)
    rest = {k: v for k, v in services.items() if k != old.node_id}
    new = leader_of(rest)
    assert new.node_id != old.node_id
    net.down = set()
    restarted = make([old.node_id], clock, net, stores=stores)[old.node_id]
    restarted._store = stores[old.node_id]
    services[old.node_id] = restarted
    # make() built a one-node membership for the restart only if the store
    # was empty; it is not, so the node rejoins with the real configuration.
    assert restarted.raft.membership.ids == {"a", "b", "c"}
    pump(clock, 0.5)
    for i in acked:
        for svc in services.values():
            assert stored(svc._store, b"k%d" % i) == b"v%d" % i


# -- found by a review of the driver against the core's contract (issue 10) --------


def _follower_alone(store: MemoryStore, clock: Clock, net: Network, rng_seed: int = 1) -> ReplicationService:
    """Node b of {a, b, c}, with no a and c: the test speaks for the leader."""
    members = Membership(tuple(Member(i, f"127.0.0.1:{7000 + n}") for n, i in enumerate("abc")))
    state = store.load() or store.bootstrap("cid", members)
    svc = ReplicationService(
        node_id="b",
        state=state,
        store=store,
        transport=net.transport("b"),
        clock=clock,
        rng=random.Random(rng_seed),
        config=DriverConfig(
            raft=RaftConfig(election_ticks=10, heartbeat_ticks=1), tick_seconds=TICK, request_timeout=1.0
        ),
    )
    net.nodes["b"] = svc
    svc.startService()
    return svc


def _append_to_b(index: int, key: bytes) -> AppendEntries:
    rid = RequestId(1, index)
    return AppendEntries(
        frm="a", to="b", term=2, prev_index=index - 1, prev_term=1 if index == 2 else 2, commit=index - 1,
        entries=(Entry(index, 2, data=encode_put(rid, key, b"v")),),
    )


def test_a_follower_stores_and_acknowledges_an_append_in_the_call_that_brings_it() -> None:
    """The leader's commit waits for the follower's acknowledgement, so a
    follower stores and acknowledges an append within ``receive``, not a
    reactor turn later; with a client request of its own waiting to be
    forwarded in this turn, the turn runs next as before, for both."""
    clock = Clock()
    net = Network(clock)
    store = MemoryStore()
    b = _follower_alone(store, clock, net)
    b.receive([_append_to_b(2, b"k")])
    acks = [m for m in net.sent if isinstance(m, AppendResponse)]
    assert [(a.to, a.success, a.index) for a in acks] == [("a", True, 2)]
    assert max(store.log) == 2
    put(b, b"mine", b"x")  # a client's write on b, to forward with the turn
    b.receive([_append_to_b(3, b"k2")])
    assert len([m for m in net.sent if isinstance(m, AppendResponse)]) == 1 and max(store.log) == 2
    clock.advance(0)
    acks = [m for m in net.sent if isinstance(m, AppendResponse)]
    assert [(a.success, a.index) for a in acks] == [(True, 2), (True, 3)] and max(store.log) == 3


def test_a_read_after_a_snapshot_install_never_sees_the_state_before_it() -> None:
    """Issue 10, bug 2 (a stale linearizable read). One Ready both installs a
    snapshot (index 10, where K = new) and applies entry 11 after it. The
    driver put entry 11 in the overlay, set applied = 11 and released reads
    before the store held the snapshot: a read at index 10 saw K = old from
    the store as it was. Then applied went back to 10. Rule now: nothing
    from a Ready that carries a snapshot is applied, answered or released
    until the snapshot is in the store; applied never moves backwards."""
    from dkv.raft.messages import (
        AppendEntries,
        Entry,
        InstallSnapshot,
        ReadIndexRequest,
        ReadIndexResponse,
        SnapshotMeta,
    )
    from dkv.storage import record_crc

    clock = Clock()
    net = Network(clock)
    store = GatedStore()
    b = _follower_alone(store, clock, net)
    members = b.raft.membership
    rid = b.next_request_id()
    b.receive(
        [
            AppendEntries(
                frm="a",
                to="b",
                term=2,
                prev_index=1,
                prev_term=1,
                commit=3,
                entries=(Entry(2, 2), Entry(3, 2, data=encode_put(rid, b"K", b"old"))),
            )
        ]
    )
    clock.advance(0)
    assert b.applied == 3 and stored(store, b"K") == b"old"
    # The leader's state at index 10 (K = new) is staged on b...
    leader_state = MemoryStore()
    MvccStore(leader_state.tables).put(PutRequest(key=b"K", value=b"new"))
    records = leader_state.snapshot_reader(1 << 20).read(0)[0]
    meta = SnapshotMeta(10, 2, members)
    store.stage_begin(meta)
    store.stage_chunk(0, records, record_crc(records), True)
    # ...and its install is slow, while the next append arrives at once.
    store.gated = True
    rid2 = b.next_request_id()
    b.receive(
        [
            InstallSnapshot(frm="a", to="b", term=2, meta=meta),
            AppendEntries(
                frm="a",
                to="b",
                term=2,
                prev_index=10,
                prev_term=2,
                commit=11,
                entries=(Entry(11, 2, data=encode_put(rid2, b"K2", b"x")),),
            ),
        ]
    )
    seen: list = []
    applied_seen = [b.applied]
    read = b.read_barrier().addCallback(lambda _: seen.append(b.read(b"K")))
    clock.advance(0)
    applied_seen.append(b.applied)
    [request] = [m for m in net.sent if isinstance(m, ReadIndexRequest)]
    b.receive([ReadIndexResponse(frm="a", to="b", term=2, ctx=request.ctx, index=10)])
    clock.advance(0)
    applied_seen.append(b.applied)
    assert seen == [], "the read was served before the snapshot was installed"
    store.gated = False
    store.release()
    clock.advance(0)
    applied_seen.append(b.applied)
    assert seen == [b"new"]
    assert b.read(b"K2") == b"x"
    assert applied_seen == sorted(applied_seen) and applied_seen[-1] == 11
    assert outcome(read) == [None]


def test_an_answer_meant_for_an_earlier_run_matches_no_request_of_this_one() -> None:
    """Issue 10, bug 4. Forwarded requests were numbered from 1 in every
    process, so a leader's late refusal of the previous run's forward could
    match the new run's: its write would be retried although the leader had
    appended it (applied twice). Now every ctx carries a random incarnation
    of the process, checked on every answer."""
    from dkv.raft.messages import Propose, ProposeRejected

    clock = Clock()
    net = Network(clock)
    stores = {i: MemoryStore() for i in "abc"}
    services = make(["a", "b", "c"], clock, net, stores=stores)
    pump(clock, 0.3)
    a = leader_of(services)
    assert a.node_id == "a"
    net.down = {"b"}  # b's forward is lost with b's crash
    outcome(put(services["b"], b"old", b"1"))
    clock.advance(0)
    [old_forward] = [m for m in net.sent if isinstance(m, Propose) and m.frm == "b"]
    services["b"].stopService()
    net.down = set()
    b = ReplicationService(  # the same node, a new process (a new random generator)
        node_id="b",
        state=stores["b"].load(),
        store=stores["b"],
        transport=net.transport("b"),
        clock=clock,
        rng=random.Random(99),
        config=DriverConfig(
            raft=RaftConfig(election_ticks=10, heartbeat_ticks=1), tick_seconds=TICK, request_timeout=1.0
        ),
    )
    net.nodes["b"] = b
    b.startService()
    pump(clock, 0.1)
    assert b.raft.leader == "a"
    net.held = {"a"}  # what b sends a is slow to arrive
    result = outcome(put(b, b"new", b"2"))
    clock.advance(0)  # b forwards the write to a...
    # ...and the leader's refusal of the previous run's forward arrives late.
    b.receive([ProposeRejected(frm="a", to="b", term=a.raft.term, ctx=old_forward.ctx)])
    pump(clock, 0.05)
    net.release("a")
    pump(clock, 0.2)
    assert ok(result)
    payloads = [e.data for e in a.raft.log.slice(a.raft.log.first_index(), a.raft.log.last_index() + 1)]
    assert sum(b"new" in p for p in payloads) == 1, "the write was appended twice"
