"""Log time at the driver: the leader stamps log time (as it found it when it took
the lead, moved on by its injected monotonic clock) into every command it
appends, its own and those forwarded to it, so every replica applies the same
stamps; nothing is appended for time to pass; and a keyed write retried on
another node after a leader change gets the first answer, until the window of
log time has passed."""

from __future__ import annotations

from twisted.internet.task import Clock

from dkv.commands import Idempotency, decode, encode
from dkv.idempotency import IdempotencyTable, LeaderStamps
from dkv.pb.etcd_rpc_pb2 import PutRequest
from dkv.raft.messages import EntryKind
from dkv.storage.overlay import Overlay
from tests.test_replication import Network, leader_of, make, ok, outcome, pump, put

START = 1_000.0  # seconds on the fake clock when the cluster starts


def _stamps(svc) -> list[int]:
    """The leader stamps of the commands in svc's log, in index order."""
    return [decode(e.data).leader_time_ms for e in svc._store.load().entries if e.kind == EntryKind.NORMAL and e.data]


def test_the_leader_stamps_what_it_appends_and_every_replica_holds_the_same() -> None:
    clock = Clock()
    clock.advance(START)
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net)
    pump(clock, 0.3)
    assert leader_of(services).node_id == "a"
    own = outcome(put(services["a"], b"k", b"1"))
    pump(clock, 0.1)
    forwarded = outcome(put(services["c"], b"k", b"2"))  # a follower forwards it unstamped
    pump(clock, 0.1)
    assert ok(own) and ok(forwarded)
    stamps = _stamps(services["a"])
    # A fresh cluster's log time starts at 0; stamps move on with the leader's clock.
    assert len(stamps) == 2 and 0 < stamps[0] < stamps[1] <= stamps[0] + 1000 * (clock.seconds() - START)
    for svc in services.values():
        assert _stamps(svc) == stamps
    # Time passing appends nothing (no clock entries move the log).
    last = services["a"].raft.status().last_index
    pump(clock, 1.0)
    assert services["a"].raft.status().last_index == last
    with services["b"]._store.reading() as tables:
        assert IdempotencyTable(Overlay().writer(tables)).now_ms == stamps[1]


def _keyed_put(svc, value: bytes, window: float):
    rid = svc.next_request_id()
    return svc.propose(rid, encode(rid, PutRequest(key=b"k", value=value), Idempotency(b"op", window)))


def test_a_keyed_retry_after_a_leader_change_gets_the_first_answer_until_the_window_passes() -> None:
    clock = Clock()
    clock.advance(START)
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net)
    pump(clock, 0.3)
    first = outcome(_keyed_put(services["b"], b"v", window=2.0))
    pump(clock, 0.1)
    assert ok(first) and first[0].header.revision == 2
    net.down.add("a")  # the leader dies
    pump(clock, 0.5)
    new = leader_of({i: s for i, s in services.items() if i != "a"})
    retry = outcome(_keyed_put(services["c"], b"v", window=2.0))
    pump(clock, 0.1)
    assert ok(retry) and retry[0] == first[0]
    assert new.raft.role.value == "leader"
    # After the window (2 s of log time, stamped by the new leader): a new write.
    pump(clock, 2.1)
    late = outcome(_keyed_put(services["c"], b"v", window=2.0))
    pump(clock, 0.1)
    assert ok(late) and late[0].header.revision == 3


def test_leader_stamps_go_on_from_log_time_by_the_monotonic_clock_only() -> None:
    stamps = LeaderStamps()
    assert stamps.now_ms(50.0, lambda: 7_000) == 7_001  # starts just past the log time it finds
    assert stamps.now_ms(52.5, lambda: 7_001) == 9_501  # then its own clock, not the log, moves it
    assert stamps.now_ms(53.0, lambda: 12_000) == 12_001  # a lagging start: applied log time overtook it
    assert stamps.now_ms(53.5, lambda: 12_001) == 12_501
    stamps.stop()  # leadership ends; a new spell starts from log time again,
    assert stamps.now_ms(10.0, lambda: 12_501) == 12_502  # whatever origin this machine's clock has


def test_a_new_leader_stamps_on_from_the_log_time_the_old_one_reached() -> None:
    clock = Clock()
    clock.advance(START)
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net)
    pump(clock, 0.3)
    first = outcome(put(services["a"], b"k", b"1"))
    pump(clock, 5.0)
    second = outcome(put(services["a"], b"k", b"2"))
    pump(clock, 0.1)
    assert ok(first) and ok(second)
    before = _stamps(services["b"])[-1]
    net.down.add("a")
    pump(clock, 0.5)
    new = leader_of({i: s for i, s in services.items() if i != "a"})
    third = outcome(put(new, b"k", b"3"))
    pump(clock, 0.1)
    assert ok(third)
    after = _stamps(new)[-1]
    assert before < after < before + 2_000
