"""Admission control (``dkv.replication.admission``): each bound refuses new
work at once with ``Overloaded`` (never queued, never proposed), counts it,
logs it at most once per interval; and the answers the APIs make of it. On a
fake clock with in-memory stores (the drivers of ``tests.test_replication``)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from dkv.api.etcd_v3 import answer_error
from dkv.api.http_common import error_body
from dkv.commands import encode_put
from dkv.config import Admission
from dkv.errors import NoLeader, Overloaded
from dkv.metrics import NodeMetrics, NodeState
from dkv.mvcc.errors import Code
from dkv.raft import RaftConfig, Role
from dkv.replication import DriverConfig, ReplicationService
from dkv.replication.admission import APPLY_GAP, PENDING_PROPOSALS, PENDING_READS, QUEUE_DELAY, AdmissionControl
from tests.test_metrics import samples
from tests.test_replication import TICK, GatedStore, Network, leader_of, make, ok, outcome, pump, put, stored


def refused_for(results: list, reason: str) -> bool:
    """The outcome list holds one Overloaded failure for reason."""
    return (
        len(results) == 1
        and isinstance(results[0], Failure)
        and isinstance(results[0].value, Overloaded)
        and results[0].value.reason == reason
    )


def with_admission(services: dict[str, ReplicationService], clock: Clock, **bounds: float) -> None:
    for svc in services.values():
        svc.admission = AdmissionControl(Admission(**bounds), clock)


def gated_leader(clock: Clock, timeout: float = 1.0, **bounds: float) -> tuple[ReplicationService, GatedStore]:
    """A one-node leader with these admission bounds (requests time out
    after timeout seconds) whose store writes only while not ``gated``."""
    store = GatedStore()
    svc = make(["a"], clock, Network(clock), stores={"a": store}, timeout=timeout)["a"]
    with_admission({"a": svc}, clock, **bounds)
    pump(clock, 0.1)
    assert svc.raft.role is Role.LEADER
    return svc, store


def reads_held_on_b(clock: Clock, timeout: float, **bounds: float) -> tuple[Network, ReplicationService]:
    """Three nodes with these admission bounds, a leading; the messages to a
    are held, so the ReadIndex requests of follower b wait on the way."""
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, timeout=timeout)
    with_admission(services, clock, **bounds)
    pump(clock, 0.3)
    net.held.add("a")
    return net, services["b"]


# -- the policy ------------------------------------------------------------------------------


def test_writes_are_refused_at_the_pending_bound_and_counted() -> None:
    control = AdmissionControl(Admission(max_pending_proposals=3), Clock())
    control.check_write(2, commit=10, applied=10)
    with pytest.raises(Overloaded) as e:
        control.check_write(3, commit=10, applied=10)
    assert e.value.reason == PENDING_PROPOSALS
    assert e.value.http_status == 429 and e.value.grpc_code == 8
    assert "--max-pending-proposals" in e.value.message
    assert control.refused == {PENDING_PROPOSALS: 1, PENDING_READS: 0, APPLY_GAP: 0, QUEUE_DELAY: 0}


def test_writes_are_refused_while_the_apply_trails_the_commit() -> None:
    """etcd's maxGapBetweenApplyAndCommitIndex: a gap of exactly the bound
    still admits; one more refuses."""
    control = AdmissionControl(Admission(max_apply_gap=5), Clock())
    control.check_write(0, commit=15, applied=10)
    with pytest.raises(Overloaded) as e:
        control.check_write(0, commit=16, applied=10)
    assert e.value.reason == APPLY_GAP
    assert control.refused[APPLY_GAP] == 1


def test_writes_are_refused_once_the_oldest_waiting_one_waited_past_the_delay_bound() -> None:
    """The bound is on how long the oldest write waiting has waited, not on
    how many wait: exactly the bound still admits; past it refuses. With no
    write answered yet the target is the maximum."""
    clock = Clock()
    clock.advance(100.0)
    control = AdmissionControl(Admission(max_queue_delay=0.25, queue_delay_min_pending=3), clock)
    assert control.queue_delay_target() == 0.25
    control.check_write(0, commit=10, applied=10, oldest_since=None)  # none waits
    control.check_write(500, commit=10, applied=10, oldest_since=99.75)
    control.check_write(2, commit=10, applied=10, oldest_since=90.0)  # too few wait to call it overload
    with pytest.raises(Overloaded) as e:
        control.check_write(3, commit=10, applied=10, oldest_since=99.7)
    assert e.value.reason == QUEUE_DELAY
    assert "waited 300 ms" in e.value.message and "target is 250 ms" in e.value.message
    assert "--max-queue-delay" in e.value.message
    assert control.refused[QUEUE_DELAY] == 1
    off = AdmissionControl(Admission(max_queue_delay=0.0), clock)
    off.check_write(200, commit=10, applied=10, oldest_since=0.0)  # 0: no such bound
    assert off.queue_delay_target() == 0.0


def test_the_delay_target_is_a_multiple_of_the_fastest_recent_write_within_its_bounds() -> None:
    """factor x the fastest write answered over the last one to two
    windows, clamped to [min, max]; it forgets a window two windows old."""
    clock = Clock()
    limits = Admission(min_queue_delay=0.02, max_queue_delay=0.25, queue_delay_factor=4.0, queue_delay_window=10.0)
    control = AdmissionControl(limits, clock)
    control.write_answered(0.030)
    control.write_answered(0.012)  # the fastest: 4 x 12 ms
    control.write_answered(0.050)
    assert control.queue_delay_target() == pytest.approx(0.048)
    clock.advance(10.0)  # a new window: the last one's fastest still counts
    control.write_answered(0.040)
    assert control.queue_delay_target() == pytest.approx(0.048)
    clock.advance(10.0)  # the 12 ms write is two windows old: forgotten
    assert control.queue_delay_target() == pytest.approx(0.160)
    control.write_answered(0.001)
    assert control.queue_delay_target() == 0.02  # never below the minimum
    clock.advance(10.0)
    control.write_answered(0.5)
    clock.advance(10.0)
    assert control.queue_delay_target() == 0.25  # nor above the maximum
    clock.advance(25.0)  # nothing answered for two windows: the maximum again
    assert control.queue_delay_target() == 0.25


def test_a_fast_node_refuses_on_its_own_target_not_the_maximum() -> None:
    clock = Clock()
    clock.advance(100.0)
    control = AdmissionControl(Admission(queue_delay_min_pending=2), clock)
    control.write_answered(0.005)  # target: max(20 ms, 4 x 5 ms) = 20 ms
    control.check_write(5, commit=1, applied=1, oldest_since=100.0 - 0.020)
    with pytest.raises(Overloaded) as e:
        control.check_write(5, commit=1, applied=1, oldest_since=100.0 - 0.021)
    assert e.value.reason == QUEUE_DELAY and "target is 20 ms" in e.value.message


def test_reads_are_refused_once_the_oldest_waiting_read_waited_past_the_target() -> None:
    clock = Clock()
    clock.advance(100.0)
    control = AdmissionControl(Admission(max_queue_delay=0.1, queue_delay_min_pending=2), clock)
    control.check_read(1, oldest_since=0.0)  # too few wait
    control.check_read(2, oldest_since=99.9)
    with pytest.raises(Overloaded) as e:
        control.check_read(2, oldest_since=99.8)
    assert e.value.reason == QUEUE_DELAY and "oldest read" in e.value.message


def test_reads_are_refused_at_their_own_bound() -> None:
    control = AdmissionControl(Admission(max_pending_reads=2), Clock())
    control.check_read(1)
    with pytest.raises(Overloaded) as e:
        control.check_read(2)
    assert e.value.reason == PENDING_READS


def test_refusals_are_logged_once_per_interval_with_a_count() -> None:
    clock = Clock()
    control = AdmissionControl(Admission(max_pending_reads=1), clock, log_every=10.0)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(100):
            with pytest.raises(Overloaded):
                control.check_read(5)
        clock.advance(9.9)
        with pytest.raises(Overloaded):
            control.check_read(5)
        clock.advance(0.1)
        with pytest.raises(Overloaded):
            control.check_read(5)
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e for e in events if e.get("log_namespace") == "dkv.admission"]
    assert [e["count"] for e in lines] == [1, 101]
    assert control.refused[PENDING_READS] == 102


# -- the driver ------------------------------------------------------------------------------


def test_a_refused_write_is_never_proposed_and_the_bound_frees_as_writes_finish() -> None:
    clock = Clock()
    svc, store = gated_leader(clock, max_pending_proposals=3)
    store.gated = True
    admitted = [outcome(put(svc, b"k%d" % i, b"v")) for i in range(3)]
    refused = outcome(put(svc, b"refused", b"v"))
    assert refused_for(refused, PENDING_PROPOSALS)  # at once: no turn of the clock
    assert svc.requests.pending_writes == 3
    clock.advance(0)
    store.gated = False
    store.release()
    pump(clock, 0.05)
    assert all(ok(r) for r in admitted)
    assert stored(store, b"refused") is None
    log = svc.raft.log
    assert all(b"refused" not in e.data for e in log.slice(log.first_index(), log.last_index() + 1))
    later = outcome(put(svc, b"later", b"v"))
    pump(clock, 0.05)
    assert ok(later)


def test_writes_are_refused_while_the_oldest_waits_past_the_delay_bound_and_admitted_again_after() -> None:
    clock = Clock()
    svc, store = gated_leader(clock, timeout=5.0, max_queue_delay=0.5, queue_delay_min_pending=2)
    store.gated = True
    first = outcome(put(svc, b"first", b"v"))
    clock.advance(0.4)
    second = outcome(put(svc, b"second", b"v"))  # the oldest waited 0.4 s: admitted
    clock.advance(0.2)
    assert refused_for(outcome(put(svc, b"refused", b"v")), QUEUE_DELAY)  # it waited 0.6 s
    assert svc.requests.pending_writes == 2
    store.gated = False
    store.release()
    pump(clock, 0.05)
    assert ok(first) and ok(second)
    assert stored(store, b"refused") is None
    assert svc.requests.oldest_write_since() is None
    later = outcome(put(svc, b"later", b"v"))  # nothing waits any more
    pump(clock, 0.05)
    assert ok(later)


def test_a_write_whose_client_went_away_does_not_age_the_queue() -> None:
    """Clients that gave up (their requests cancelled: a closed connection)
    leave writes pending until applied, but nobody waits for those: the
    delay bound judges the oldest write a client still waits for."""
    clock = Clock()
    svc, store = gated_leader(clock, timeout=5.0, max_queue_delay=0.5, queue_delay_min_pending=2)
    store.gated = True
    abandoned = [put(svc, b"gone-%d" % i, b"v") for i in range(2)]
    clock.advance(0.6)
    for d in abandoned:
        d.cancel()
        d.addErrback(lambda f: f.trap(CancelledError))
    assert svc.requests.pending_writes == 2 and svc.requests.oldest_write_since() is None
    again = outcome(put(svc, b"again", b"v"))  # would be refused for the abandoned ones' 0.6 s
    assert again == []
    clock.advance(0.6)
    assert refused_for(outcome(put(svc, b"late", b"v")), QUEUE_DELAY)  # "again" itself waited 0.6 s
    store.gated = False
    store.release()
    pump(clock, 0.05)
    assert ok(again)


def test_answered_writes_set_the_target_and_the_front_doors_check_refuses_as_propose_does() -> None:
    """The driver feeds each answered write's time to the target; the check
    a caller makes before it builds a write (the REST front door) refuses
    exactly when ``propose`` would, counted once, and proposes nothing."""
    clock = Clock()
    svc, store = gated_leader(clock, timeout=5.0, min_queue_delay=0.01, queue_delay_min_pending=2)
    assert svc.admission.queue_delay_target() == 0.25  # nothing answered yet
    done = outcome(put(svc, b"k", b"v"))
    pump(clock, 0.05)
    assert ok(done)
    assert svc.admission.queue_delay_target() == 0.01  # 4 x a write answered at once: the minimum
    store.gated = True
    waiting = [outcome(put(svc, b"w%d" % i, b"v")) for i in range(2)]
    svc.check_write_admission()  # nothing has waited yet
    clock.advance(0.02)
    with pytest.raises(Overloaded):
        svc.check_write_admission()
    assert refused_for(outcome(put(svc, b"refused", b"v")), QUEUE_DELAY)
    assert svc.admission.refused[QUEUE_DELAY] == 2
    store.gated = False
    store.release()
    pump(clock, 0.05)
    assert all(ok(r) for r in waiting) and stored(store, b"refused") is None


def test_a_write_its_caller_just_admitted_is_not_checked_or_counted_again() -> None:
    """``propose(admitted=True)``: the caller (the REST front door) made the
    check in the same call, so the write is proposed without a second check
    and without a second count; without it the same write is refused."""
    clock = Clock()
    svc, store = gated_leader(clock, max_pending_proposals=2)
    store.gated = True
    waiting = [outcome(put(svc, b"w%d" % i, b"v")) for i in range(2)]
    assert refused_for(outcome(put(svc, b"checked", b"v")), PENDING_PROPOSALS)
    assert svc.admission.refused[PENDING_PROPOSALS] == 1
    rid = svc.next_request_id()
    vouched = outcome(svc.propose(rid, encode_put(rid, b"vouched", b"v"), admitted=True))
    assert vouched == [] and svc.requests.pending_writes == 3
    assert svc.admission.refused[PENDING_PROPOSALS] == 1
    store.gated = False
    store.release()
    pump(clock, 0.05)
    assert all(ok(r) for r in waiting) and ok(vouched)
    pump(clock, 1.0)  # the held writes reach the store
    assert stored(store, b"vouched") == b"v"


def test_reads_waiting_past_the_target_refuse_new_reads_but_never_a_probes() -> None:
    clock = Clock()
    net, b = reads_held_on_b(clock, 5.0, max_queue_delay=0.1, queue_delay_min_pending=2)
    waiting = [outcome(b.read_barrier()) for _ in range(2)]
    clock.advance(0.05)
    assert outcome(b.read_barrier()) == []  # the oldest waited 50 ms: admitted
    clock.advance(0.06)
    assert refused_for(outcome(b.read_barrier()), QUEUE_DELAY)  # 110 ms
    assert outcome(b.read_barrier(internal=True)) == []
    net.release("a")
    pump(clock, 0.2)
    assert waiting == [[None], [None]]
    assert b.requests.pending_reads == 0 and b.requests.oldest_read_since() is None


def test_writes_waiting_for_a_leader_do_not_count_against_the_delay_bound() -> None:
    """An election is not overload: while b knows no leader, its writes
    wait for one however long the oldest has waited, and are applied."""
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, timeout=5.0)
    with_admission(services, clock, max_queue_delay=0.1, queue_delay_min_pending=1)
    b = services["b"]
    first = outcome(put(b, b"first", b"v"))  # before any election: no leader known
    clock.advance(0.2)
    assert b.raft.leader is None
    second = outcome(put(b, b"second", b"v"))
    assert second == []  # waits, not refused
    pump(clock, 1.0)
    assert ok(first) and ok(second)


def test_forwarded_writes_count_on_the_follower_that_took_them() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net)
    with_admission(services, clock, max_pending_proposals=2)
    pump(clock, 0.3)
    assert leader_of(services).node_id == "a"
    net.held.add("a")  # the forwards wait on the way
    b = services["b"]
    taken = [outcome(put(b, b"k%d" % i, b"v")) for i in range(2)]
    refused = outcome(put(b, b"k9", b"v"))
    assert refused_for(refused, PENDING_PROPOSALS)
    other = outcome(put(services["c"], b"other", b"v"))  # c has its own bound: admitted
    assert other == []
    net.release("a")
    pump(clock, 0.2)
    assert all(ok(r) for r in taken) and ok(other)


def test_reads_wait_up_to_their_bound_then_are_refused() -> None:
    clock = Clock()
    net, b = reads_held_on_b(clock, 1.0, max_pending_reads=2)
    waiting = [outcome(b.read_barrier()) for _ in range(2)]
    assert refused_for(outcome(b.read_barrier()), PENDING_READS)
    internal = outcome(b.read_barrier(internal=True))  # a probe's read is never refused
    assert internal == []
    assert b.requests.pending_reads == 3
    net.release("a")
    pump(clock, 0.2)
    assert waiting == [[None], [None]] and internal == [None]
    assert b.requests.pending_reads == 0
    assert outcome(b.read_barrier()) == []  # admitted again


def test_expired_reads_free_their_places() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, timeout=0.5)
    with_admission(services, clock, max_pending_reads=1)
    pump(clock, 0.3)
    net.down.add("a")
    b = services["b"]
    first = outcome(b.read_barrier())
    assert refused_for(outcome(b.read_barrier()), PENDING_READS)
    pump(clock, 0.6)
    assert len(first) == 1 and isinstance(first[0].value, NoLeader)
    assert b.requests.pending_reads == 0


def test_a_follower_whose_apply_trails_refuses_writes() -> None:
    """The follower b learns commit indexes from the leader's appends while
    its own store is stuck: once the gap passes the bound, writes sent to b
    are refused (reads are not)."""
    clock = Clock()
    net = Network(clock)
    store = GatedStore()
    services = make(["a", "b", "c"], clock, net, stores={"b": store})
    with_admission(services, clock, max_apply_gap=5)
    pump(clock, 0.3)
    a, b = services["a"], services["b"]
    store.gated = True
    for i in range(10):
        outcome(put(a, b"k%d" % i, b"v"))
        pump(clock, 0.02)
    assert b.known_commit - b.applied > 5
    assert refused_for(outcome(put(b, b"x", b"v")), APPLY_GAP)
    assert outcome(b.read_barrier()) == []
    store.gated = False
    store.release()
    pump(clock, 0.2)
    assert ok(outcome_after(clock, put(b, b"x", b"v")))


def outcome_after(clock: Clock, d: Any) -> list:
    results = outcome(d)
    pump(clock, 0.2)
    return results


def test_default_bounds_are_etcds_gap_and_generous_queues() -> None:
    config = DriverConfig(raft=RaftConfig(), tick_seconds=TICK)
    assert config.admission == Admission()
    assert Admission().max_apply_gap == 5000
    assert (Admission().min_queue_delay, Admission().max_queue_delay) == (0.02, 0.25)
    assert Admission().queue_delay_factor == 4.0
    assert Admission().queue_delay_min_pending == 80  # a few slow writes are not overload


# -- what clients see ------------------------------------------------------------------------


def test_etcd_apis_say_too_many_requests_and_v0_names_the_reason() -> None:
    error = Overloaded("too many requests: 9 writes are waiting", reason=PENDING_PROPOSALS)
    assert answer_error(error) == (int(Code.RESOURCE_EXHAUSTED), "etcdserver: too many requests")
    assert error_body(error) == {
        "error": "too many requests: 9 writes are waiting",
        "code": 8,
        "reason": PENDING_PROPOSALS,
        "retry_after": 1,
    }


def test_refusals_are_a_metric_by_reason() -> None:
    metrics = NodeMetrics()
    metrics.read_state = lambda: NodeState(requests_refused={PENDING_PROPOSALS: 4, PENDING_READS: 0, APPLY_GAP: 1})
    values = samples(metrics.render().decode())
    assert values[("dkv_server_requests_refused_total", (("reason", PENDING_PROPOSALS),))] == 4
    assert values[("dkv_server_requests_refused_total", (("reason", APPLY_GAP),))] == 1
