"""Applied writes wait for the next transaction (``dkv.replication.unstored``):
a Ready that brings only committed entries and a new commit index is not
written on its own, the applied writes reach the store within
``APPLY_STORE_DELAY``, and the log is never compacted past what the store
holds."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from dkv.raft.messages import HardState
from dkv.replication.unstored import APPLY_STORE_DELAY, Unstored, joined
from dkv.storage import Applied, WriteBatch
from dkv.storage.memory import MemoryStore
from tests.test_replication import Network, make, ok, outcome, pump, put, stored

W1 = ("t", b"a", b"1")
W2 = ("t", b"b", b"2")


def test_only_a_commit_index_change_may_wait() -> None:
    waiting = Unstored(durable=(3, "a"))
    assert waiting.may_wait(None)
    assert waiting.may_wait(HardState(3, "a", 10))
    assert not waiting.may_wait(HardState(4, "a", 10))  # a new term
    assert not waiting.may_wait(HardState(3, "b", 10))  # a vote
    waiting.written(HardState(4, "", 12))
    assert waiting.durable == (4, "") and waiting.may_wait(HardState(4, "", 13))
    waiting.written(None)
    assert waiting.durable == (4, "")


def test_waiting_writes_come_first_in_the_next_transaction_and_then_nothing_waits() -> None:
    waiting = Unstored()
    waiting.add(Applied(5, (W1,)), HardState(2, "", 5), now=7.0)
    waiting.add(Applied(6, (W2,)), None, now=8.0)
    assert waiting.since == 7.0  # the oldest waiting write's
    applied, hs = waiting.take(None)
    assert applied == Applied(6, (W1, W2)) and hs == HardState(2, "", 5)
    assert (waiting.applied, waiting.hard_state, waiting.since) == (None, None, None)
    waiting.add(None, HardState(2, "", 9))
    assert waiting.since is None  # a commit index alone is never written for its own sake
    assert waiting.take(HardState(3, "c", 9)) == (None, HardState(3, "c", 9))  # the newer hard state wins


def test_joined_keeps_the_order_and_refuses_to_go_back() -> None:
    assert joined(None, None) is None
    assert joined(Applied(1, (W1,)), None) == Applied(1, (W1,))
    assert joined(None, Applied(2, (W2,))) == Applied(2, (W2,))
    with pytest.raises(ValueError):
        joined(Applied(3, (W1,)), Applied(2, (W2,)))


class CountingStore(MemoryStore):
    """A MemoryStore that keeps every batch it was asked to write."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[WriteBatch] = []

    def write(self, batch):
        self.batches.append(batch)
        return super().write(batch)


def _leader(clock: Clock) -> tuple:
    store = CountingStore()
    svc = make(["a"], clock, Network(clock), stores={"a": store})["a"]
    pump(clock, 0.1)
    return svc, store


def test_a_commit_alone_is_not_written_and_the_applied_writes_follow_within_the_delay() -> None:
    clock = Clock()
    svc, store = _leader(clock)
    before = len(store.batches)
    done = outcome(put(svc, b"k", b"v"))
    clock.advance(0)
    # One transaction: the entry. Its commit (a lone voter commits once it
    # is stored) applies and answers the write without a second one.
    assert ok(done)
    assert [len(b.entries) for b in store.batches[before:]] == [1]
    assert svc.read(b"k") == b"v" and stored(store, b"k") is None
    clock.advance(APPLY_STORE_DELAY)
    assert stored(store, b"k") == b"v"
    last = store.batches[-1]
    assert last.entries == () and last.apply is not None and last.apply.index == svc.applied


def test_the_applied_writes_ride_with_the_next_entries() -> None:
    clock = Clock()
    svc, store = _leader(clock)
    first = outcome(put(svc, b"k1", b"v1"))
    clock.advance(0)
    before = len(store.batches)
    second = outcome(put(svc, b"k2", b"v2"))
    clock.advance(0)
    assert ok(first) and ok(second)
    batch = store.batches[before]
    assert len(batch.entries) == 1 and batch.apply is not None  # k1's writes, with k2's entry
    assert stored(store, b"k1") == b"v1"
    clock.advance(APPLY_STORE_DELAY)
    assert stored(store, b"k2") == b"v2"


def test_the_log_is_never_compacted_past_what_the_store_holds() -> None:
    clock = Clock()
    net = Network(clock)
    services = make(["a"], clock, net)
    svc = services["a"]
    svc._compaction.every, svc._compaction.keep = 3, 0
    pump(clock, 0.1)
    compacted = []
    store_write = svc._store.write

    def write(batch: WriteBatch):
        if batch.compact is not None:
            held = svc._store.load().applied  # before this batch
            compacted.append((batch.compact.index, max(held, batch.apply.index if batch.apply else 0)))
        return store_write(batch)

    svc._store.write = write
    for n in range(12):
        outcome(put(svc, b"k%d" % n, b"v"))
        clock.advance(0)
    clock.advance(APPLY_STORE_DELAY)
    pump(clock, 0.1)
    assert compacted
    assert all(point <= held for point, held in compacted), compacted
    state = svc._store.load()
    assert 0 < state.snapshot_index <= state.applied
