"""Membership changes, leadership transfer, compaction and snapshot transfer,
driven through ReplicationService on a fake clock and an in-memory network."""

from __future__ import annotations

import random

import attrs
import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from dkv.errors import FailedPrecondition, MemberNotFound, NoLeader
from dkv.raft import RaftConfig, Role
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import InstallSnapshot, SnapshotMeta
from dkv.replication import DriverConfig, ReplicationService
from dkv.replication.service import HELD_FLUSH_SECONDS
from dkv.storage import record_crc
from dkv.storage.memory import MemoryStore
from dkv.transport.snapshots import CHUNK_BYTES, OutgoingSnapshot
from tests.test_replication import TICK, Network, ok, outcome, pump, put, stored

AB = Membership(tuple(Member(i, f"127.0.0.1:{7000 + n}") for n, i in enumerate("ab")))
MEMBERS = Membership(tuple(Member(i, f"127.0.0.1:{7000 + n}") for n, i in enumerate("abc")))
#: Each node's random seed (explicit: ``hash(str)`` changes per process).
SEEDS = {node_id: n for n, node_id in enumerate("abcde", start=11)}


def node(
    node_id: str,
    clock: Clock,
    net: Network,
    store: MemoryStore,
    *,
    first: bool = False,
    snapshot_sender=None,
    **config,
) -> ReplicationService:
    """Node node_id; a removal is recorded in ``net.removed``."""
    state = store.load() or store.bootstrap("cid", MEMBERS)
    svc = ReplicationService(
        node_id=node_id,
        state=state,
        store=store,
        transport=net.transport(node_id),
        clock=clock,
        rng=random.Random(SEEDS[node_id]),
        config=DriverConfig(
            raft=RaftConfig(election_ticks=10, heartbeat_ticks=1),
            tick_seconds=TICK,
            request_timeout=2.0,
            first_election_ticks=2 if first else None,
            **config,
        ),
        snapshot_sender=snapshot_sender,
        on_removed=lambda: net.removed.append(node_id),
    )
    net.nodes[node_id] = svc
    svc.startService()
    return svc


def direct_sender(net: Network, stores: dict[str, MemoryStore]):
    """Stream a snapshot straight into the target's store, as the gRPC
    transfer would, then step InstallSnapshot into the target."""

    def send(peer: str, snap: OutgoingSnapshot, term: int) -> Deferred:
        target = stores[peer]
        seq = target.stage_begin(snap.meta).result
        crc = 0
        while True:
            records, last = snap.reader.read(seq)
            crc = record_crc(records, crc)
            target.stage_chunk(seq, records, crc, last)
            seq += 1
            if last:
                break
        net.nodes[peer].receive(
            [InstallSnapshot(frm=net.nodes[peer].raft.leader or "a", to=peer, term=term, meta=snap.meta)]
        )
        return succeed(None)

    return send


@pytest.fixture
def world():
    clock = Clock()
    net = Network(clock)
    stores = {i: MemoryStore() for i in "abcde"}
    kw = dict(snapshot_entries=50, snapshot_keep=10, snapshot_sender=direct_sender(net, stores))
    svcs = {i: node(i, clock, net, stores[i], first=i == "a", **kw) for i in "abc"}
    pump(clock, 0.3)
    assert svcs["a"].raft.role is Role.LEADER
    return clock, net, stores, svcs, kw


def join(world, node_id: str) -> ReplicationService:
    clock, net, stores, svcs, kw = world
    state = stores[node_id].initialize("cid", svcs["a"].raft.membership)
    assert state.entries == ()
    svcs[node_id] = node(node_id, clock, net, stores[node_id], **kw)
    return svcs[node_id]


def test_compaction_moves_the_first_index(world) -> None:
    clock, net, stores, svcs, _ = world
    for i in range(120):
        put(svcs["a"], b"k%d" % i, b"v")
        pump(clock, 0.02)
    for s in svcs.values():
        st = s.status()
        assert st.first_index > 1 and st.snapshot_index >= 50
        assert s.applied - st.snapshot_index >= 10  # the tail is kept
        assert stores[s.node_id].snapshot.index == st.snapshot_index  # persisted too
        assert min(stores[s.node_id].log) == st.snapshot_index + 1


def test_learner_joins_catches_up_by_snapshot_and_is_promoted(world) -> None:
    clock, net, stores, svcs, _ = world
    for i in range(120):
        put(svcs["a"], b"k%d" % i, b"v%d" % i)
        pump(clock, 0.02)
    added = outcome(svcs["a"].add_member(Member("d", "127.0.0.1:7003", voter=False)))
    pump(clock, 0.1)
    assert added and not isinstance(added[0], Failure)
    assert added[0].learners == {"d"}
    d = join(world, "d")
    pump(clock, 0.5)
    assert stores["d"].snapshot.index > 0, "d needed compacted entries: it got a snapshot"
    assert stored(stores["d"], b"k5") == b"v5"
    assert d.applied == svcs["a"].applied
    assert d.raft.role is Role.FOLLOWER and not d.raft.membership.is_voter("d")
    promoted = outcome(svcs["a"].promote_member("d"))
    pump(clock, 0.1)
    assert promoted[0].voters == {"a", "b", "c", "d"}
    # d now counts: with a and b down, c and d alone are not a quorum of 4...
    w = outcome(put(svcs["a"], b"after", b"promotion"))
    pump(clock, 0.1)
    assert ok(w) and d.read(b"after") == b"promotion"
    pump(clock, HELD_FLUSH_SECONDS)  # its apply, held, gets a transaction
    assert stored(stores["d"], b"after") == b"promotion"


def test_a_learner_is_not_removed_by_a_snapshot_from_before_its_addition(world) -> None:
    """A leader's store lags its applied index (held writes), and it sends to
    a new member before it applies the change: the learner's first snapshot
    may leave it out. It installs it and catches up; it does not stop."""
    clock, net, stores, svcs, _ = world
    for i in range(120):
        put(svcs["a"], b"k%d" % i, b"v%d" % i)
        pump(clock, 0.02)
    a = svcs["a"]
    early = stores["a"].snapshot_reader(CHUNK_BYTES)
    early_meta = SnapshotMeta(early.index, a.raft.term_at(early.index), a.raft.membership_at(early.index))
    assert "d" not in early_meta.membership.ids
    sent = []
    send = direct_sender(net, stores)

    def stale_first(peer: str, snap: OutgoingSnapshot, term: int) -> Deferred:
        sent.append(snap.meta.index)
        if len(sent) == 1:
            snap.reader.close()
            snap = OutgoingSnapshot(early, early_meta)
        return send(peer, snap, term)

    a._shipper._sender = stale_first
    added = outcome(a.add_member(Member("d", "127.0.0.1:7003", voter=False)))
    pump(clock, 0.1)
    assert added and not isinstance(added[0], Failure)
    d = join(world, "d")
    pump(clock, 0.5)
    assert sent and stores["d"].snapshot.index >= early_meta.index
    assert net.removed == [] and d.running
    assert d.applied == a.applied and d.raft.membership.ids == {"a", "b", "c", "d"}
    assert stored(stores["d"], b"k5") == b"v5"


def test_promote_is_refused_until_the_learner_caught_up(world) -> None:
    clock, net, stores, svcs, _ = world
    outcome(svcs["a"].add_member(Member("d", "127.0.0.1:7003", voter=False)))
    pump(clock, 0.1)
    # d never starts: its match stays 0 while the log grows past the lag.
    svcs["a"].config = attrs.evolve(svcs["a"].config, promote_lag=5)
    for i in range(20):
        put(svcs["a"], b"k%d" % i, b"v")
        pump(clock, 0.02)
    with pytest.raises(FailedPrecondition, match="has not caught up"):
        svcs["a"].promote_member("d")


def test_membership_errors(world) -> None:
    clock, net, stores, svcs, _ = world
    a = svcs["a"]
    with pytest.raises(MemberNotFound):
        a.remove_member("zz")
    with pytest.raises(MemberNotFound):
        a.promote_member("zz")
    with pytest.raises(FailedPrecondition, match="already a member"):
        a.add_member(Member("b", "127.0.0.1:9999"))
    with pytest.raises(FailedPrecondition, match="already used"):
        a.add_member(Member("z", "127.0.0.1:7001"))
    # Adding the identical member again is a no-op success (a join retried).
    same = outcome(a.add_member(Member("b", "127.0.0.1:7001")))
    assert same[0] == a.raft.membership
    # One change at a time.
    outcome(a.add_member(Member("d", "127.0.0.1:7003", voter=False)))
    with pytest.raises(FailedPrecondition, match="in progress"):
        a.add_member(Member("e", "127.0.0.1:7004", voter=False))
    from dkv.raft import NotLeader

    with pytest.raises(NotLeader):
        svcs["b"].add_member(Member("e", "127.0.0.1:7004"))


def test_removing_the_leader_hands_over_and_stops_it(world) -> None:
    clock, net, stores, svcs, _ = world
    removed = net.removed
    result = outcome(svcs["a"].remove_member("a"))
    pump(clock, 0.5)
    assert not isinstance(result[0], Failure) and result[0].voters == {"b", "c"}
    assert removed == ["a"]
    assert svcs["a"].raft.role is Role.FOLLOWER
    leaders = [s for s in (svcs["b"], svcs["c"]) if s.raft.role is Role.LEADER]
    assert len(leaders) == 1
    w = outcome(put(leaders[0], b"k", b"v"))
    pump(clock, 0.1)
    assert ok(w)


def test_removed_follower_is_told_to_stop(world) -> None:
    clock, net, stores, svcs, _ = world
    removed = net.removed
    outcome(svcs["a"].remove_member("c"))
    pump(clock, 0.2)
    assert removed == ["c"]
    assert svcs["a"].raft.membership.ids == {"a", "b"}


def test_transfer_leadership(world) -> None:
    clock, net, stores, svcs, _ = world
    result = outcome(svcs["a"].transfer_leadership("c"))
    pump(clock, 0.3)
    assert result == ["c"]
    assert svcs["c"].raft.role is Role.LEADER
    # Without a target the most up-to-date voter takes over.
    result = outcome(svcs["c"].transfer_leadership(None))
    pump(clock, 0.3)
    assert result and result[0] in ("a", "b")
    assert svcs[result[0]].raft.role is Role.LEADER


def test_a_request_waits_until_a_leader_is_known() -> None:
    clock = Clock()
    net = Network(clock)
    svcs = {i: node(i, clock, net, MemoryStore(), first=i == "a") for i in "abc"}
    assert svcs["b"].raft.leader is None
    known = outcome(svcs["b"].leader_known())
    assert known == []
    pump(clock, 0.3)
    assert known == ["a"]
    # Known already: at once.
    assert outcome(svcs["c"].leader_known()) == ["a"]


def test_a_wait_for_a_leader_ends_at_the_request_timeout() -> None:
    clock = Clock()
    net = Network(clock)
    alone = node("b", clock, net, MemoryStore())  # a and c never start: no quorum
    waited = outcome(alone.leader_known())
    pump(clock, 1.9)
    assert waited == []
    pump(clock, 0.2)
    assert len(waited) == 1 and waited[0].check(NoLeader)
    assert "no leader was elected in time" in str(waited[0].value)


def test_transfer_to_a_non_voter_is_refused(world) -> None:
    clock, net, stores, svcs, _ = world
    with pytest.raises(FailedPrecondition, match="not a voter"):
        svcs["a"].transfer_leadership("zz")


def test_restart_keeps_membership_and_snapshot_base(world) -> None:
    clock, net, stores, svcs, kw = world
    outcome(svcs["a"].add_member(Member("d", "127.0.0.1:7003", voter=False)))
    for i in range(80):
        put(svcs["a"], b"k%d" % i, b"v")
        pump(clock, 0.02)
    svcs["b"].stopService()
    svcs["b"] = node("b", clock, net, stores["b"], **kw)
    assert svcs["b"].raft.membership.ids == {"a", "b", "c", "d"}
    assert svcs["b"].status().snapshot_index == stores["b"].snapshot.index > 0
    pump(clock, 0.3)
    assert svcs["b"].applied == svcs["a"].applied


def test_notice_stops_a_node_only_if_no_leader_contacts_it(world) -> None:
    """NotMember makes a node passive; the driver stops it only if no leader
    contacts it for two election timeouts."""
    from dkv.raft.messages import Heartbeat, NotMember

    clock, net, stores, svcs, _ = world
    c = svcs["c"]
    removed = net.removed
    net.down = {"c"}  # nobody hears from it, it hears from nobody
    c.receive([NotMember(frm="a", to="c", term=c.raft.term, config_index=c.raft.log.last_index(), membership=AB)])
    pump(clock, 0.1)
    assert c.raft.removed and removed == []
    c.receive([Heartbeat(frm="a", to="c", term=c.raft.term, commit=0)])  # a leader wants it after all
    pump(clock, 0.5)
    assert not c.raft.removed and removed == []
    c.receive([NotMember(frm="a", to="c", term=c.raft.term, config_index=c.raft.log.last_index(), membership=AB)])
    pump(clock, 0.3)
    assert removed == ["c"]
