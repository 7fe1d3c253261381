"""A large compaction is proposed as a series of small ones
(``dkv.compaction_steps``): no entry drops more than a step of revisions,
the store ends as a compaction at once leaves it, on every member, and
invalid requests fail as before with nothing compacted."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from dkv.compaction_steps import compact_in_steps
from dkv.mvcc import MvccStore, MvccView, errors
from dkv.mvcc.layout import HISTORY
from dkv.node import Node
from dkv.pb.etcd_rpc_pb2 import CompactionRequest, CompactionResponse, DeleteRangeRequest, PutRequest
from dkv.storage.memory import MemoryStore
from dkv.storage.tables import MemoryTables
from tests.test_replication import Network, leader_of, make, ok, outcome, pump, put


def _cluster(writes: int):
    """A 3-node cluster whose store has revisions 2 .. writes + 1 over 3 keys."""
    clock = Clock()
    stores = {i: MemoryStore() for i in ("a", "b", "c")}
    services = make(["a", "b", "c"], clock, Network(clock), stores=stores)
    pump(clock, 0.5)
    leader = leader_of(services)
    for n in range(writes):
        written = outcome(put(leader, b"k%d" % (n % 3), b"v%d" % n))
        pump(clock, 0.02)
        assert ok(written)
    return clock, services, Node(leader, stores[leader.node_id])


def _compactions(calls: list[int]):
    """MvccStore.compact, noting each compacted revision in calls."""
    original = MvccStore.compact

    def counting(self, revision):
        calls.append(revision)
        return original(self, revision)

    return counting


def _history(svc) -> list[tuple[bytes, bytes]]:
    with svc.view() as state:
        return list(state.tables.scan(HISTORY))


def _at_once(writes: int, revision: int) -> list[tuple[bytes, bytes]]:
    """The history a single compaction to revision leaves (the reference)."""
    tables = MemoryTables()
    store = MvccStore(tables)
    for n in range(writes):
        store.put(PutRequest(key=b"k%d" % (n % 3), value=b"v%d" % n))
    store.compact(revision)
    return list(tables.scan(HISTORY))


def test_a_compaction_past_a_step_is_proposed_in_steps_and_ends_as_one_at_once(monkeypatch) -> None:
    clock, services, node = _cluster(24)  # revisions 2 .. 25
    calls: list[int] = []
    monkeypatch.setattr(MvccStore, "compact", _compactions(calls))
    answer = outcome(compact_in_steps(node, CompactionRequest(revision=22), step=5))
    pump(clock, 1.0)
    assert ok(answer) and isinstance(answer[0], CompactionResponse)
    assert sorted(set(calls)) == [5, 10, 15, 20, 22]  # every member applies each step
    assert len(calls) == 15
    expected = _at_once(24, 22)
    for svc in services.values():
        assert _history(svc) == expected
        with svc.view() as state:
            assert state.compact_revision == 22
    hashes = set()
    for svc in services.values():
        with svc.view() as state:
            hashes.add(state.hash_kv(25))
    assert len(hashes) == 1


def test_a_small_or_invalid_compaction_is_one_entry_and_fails_as_before(monkeypatch) -> None:
    clock, _, node = _cluster(10)  # revisions 2 .. 11
    calls: list[int] = []
    monkeypatch.setattr(MvccStore, "compact", _compactions(calls))
    future = outcome(compact_in_steps(node, CompactionRequest(revision=99), step=2))
    small = outcome(compact_in_steps(node, CompactionRequest(revision=3), step=5))
    pump(clock, 0.5)
    assert isinstance(future[0], Failure) and future[0].check(errors.FutureRevision)
    assert ok(small)
    again = outcome(compact_in_steps(node, CompactionRequest(revision=3), step=5))
    pump(clock, 0.5)
    assert isinstance(again[0], Failure) and again[0].check(errors.Compacted)
    assert sorted(set(calls)) == [3, 99]  # each as one entry: a future revision is not stepped towards


def test_a_step_another_compaction_passed_is_skipped() -> None:
    clock, services, node = _cluster(24)
    stepped = outcome(compact_in_steps(node, CompactionRequest(revision=23), step=5))
    other = outcome(node.write(CompactionRequest(revision=12)))  # lands right after the first step
    pump(clock, 1.0)
    assert ok(other) and ok(stepped)
    for svc in services.values():
        with svc.view() as state:
            assert state.compact_revision == 23
        assert _history(svc) == _at_once(24, 23)


@pytest.mark.parametrize("revision", [7, 13])
def test_steps_leave_what_one_compaction_leaves_whatever_the_history(revision) -> None:
    """With deletes and puts interleaved, compacting in steps of 1 and at once agree."""
    tables = MemoryTables()
    store = MvccStore(tables)
    reference = MemoryTables()
    once = MvccStore(reference)
    for s in (store, once):
        for n in range(16):
            if n % 4 == 3:
                s.delete_range(DeleteRangeRequest(key=b"k%d" % (n % 3)))
            else:
                s.put(PutRequest(key=b"k%d" % (n % 3), value=b"v%d" % n))
    for r in range(2, revision + 1):
        store.compact(r)
    once.compact(revision)
    assert list(tables.scan(HISTORY)) == list(reference.scan(HISTORY))
    assert MvccView(tables).hash_kv() == MvccView(reference).hash_kv()


def test_a_keyed_compaction_in_steps_carries_its_key_on_the_last_step_only() -> None:
    """With an Idempotency-Key the request is the last step: the steps
    before it go without the key, and a retry with the key gets the first
    answer again (not a "key reused for another request" error)."""
    clock, services, node = _cluster(24)
    keyed = node.keyed(b"compact-once")
    first = outcome(compact_in_steps(keyed, CompactionRequest(revision=22), step=5))
    pump(clock, 1.0)
    assert ok(first)
    retry = outcome(compact_in_steps(keyed, CompactionRequest(revision=22), step=5))
    pump(clock, 1.0)
    assert ok(retry) and retry[0] == first[0]
    for svc in services.values():
        assert _history(svc) == _at_once(24, 22)
