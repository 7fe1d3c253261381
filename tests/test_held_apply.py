"""Applied writes held for the store's next transaction (``dkv.replication.held_apply``):
the bookkeeping, and the driver's use of it on a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from dkv.raft import Role
from dkv.raft.messages import AppendResponse, HardState
from dkv.replication import service
from dkv.replication.held_apply import HeldApply
from dkv.replication.service import HELD_FLUSH_BATCH_SECONDS, HELD_FLUSH_SECONDS
from dkv.storage import Applied, WriteBatch
from dkv.storage.memory import MemoryStore
from tests.test_replication import GatedStore, Network, leader_of, make, ok, outcome, pump, put, stored


class RecordingStore(GatedStore):
    """Every batch it was asked to write, in order."""

    def __init__(self, log_apart: bool = False) -> None:
        super().__init__(log_apart=log_apart)
        self.batches: list[WriteBatch] = []

    def write(self, batch):
        self.batches.append(batch)
        return super().write(batch)


def _writes(*keys: bytes) -> tuple:
    return tuple(("kv", k, b"v") for k in keys)


# -- the bookkeeping -------------------------------------------------------------


def test_held_writes_join_in_order_with_the_newest_index_and_hard_state() -> None:
    held = HeldApply()
    assert not held and held.writes == 0
    held.hold(Applied(5, _writes(b"a")), HardState(2, "", 5), 1.0)
    assert held.since == 1.0
    held.hold(Applied(7, _writes(b"b", b"c")), None, 2.0)
    assert held.since == 1.0  # the oldest
    assert held and held.writes == 3
    applied, hs = held.take(Applied(9, _writes(b"d")), None)
    assert applied == Applied(9, _writes(b"a", b"b", b"c", b"d"))
    assert hs == HardState(2, "", 5)  # the newest held: the Ready brought none
    assert not held and held.since is None
    assert held.take(None, None) == (None, None)


def test_a_newer_hard_state_wins_and_a_snapshot_drops_the_writes() -> None:
    held = HeldApply()
    held.hold(Applied(5, _writes(b"a")), HardState(2, "", 5), 1.0)
    held.drop_writes()
    assert held.writes == 0
    assert held.take(None, HardState(3, "b", 8)) == (None, HardState(3, "b", 8))


def test_a_log_only_write_takes_the_held_hard_state_and_leaves_the_writes() -> None:
    held = HeldApply()
    held.hold(Applied(5, _writes(b"a")), HardState(2, "", 5), 1.0)
    assert held.take_hard_state(None) == HardState(2, "", 5)
    assert held.hard_state is None and held.writes == 1 and held.since == 1.0
    held.hold(None, HardState(2, "", 6), 2.0)
    assert held.take_hard_state(HardState(3, "b", 6)) == HardState(3, "b", 6)  # its own is newer
    assert held.take(None, None) == (Applied(5, _writes(b"a")), None)
    held.hold(None, HardState(3, "b", 7), 3.0)
    assert held.take_hard_state(None) == HardState(3, "b", 7)
    assert not held and held.since is None


# -- the driver --------------------------------------------------------------------


def _leader(store: MemoryStore):
    clock = Clock()
    net = Network(clock)
    svc = make(["a"], clock, net, stores={"a": store})["a"]
    pump(clock, 0.1)
    assert svc.raft.role is Role.LEADER
    pump(clock, HELD_FLUSH_SECONDS * 2)  # the election's no-op is in the store
    return clock, svc


def _answered(clock: Clock, svc, key: bytes, value: bytes) -> None:
    """Put key=value on the single-node leader svc and turn the clock (not
    forward) until it is answered."""
    result = outcome(put(svc, key, value))
    for _ in range(5):
        clock.advance(0)
    assert ok(result)


def test_a_write_costs_one_transaction_and_its_apply_is_held_then_flushed() -> None:
    """Single node: the entry's transaction; its apply (nothing else to make
    durable) is answered from the overlay without one, then stored by the
    flush once no other transaction came in time."""
    store = RecordingStore()
    clock, svc = _leader(store)
    before = len(store.batches)
    _answered(clock, svc, b"k", b"v")
    assert svc.read(b"k") == b"v"
    assert len(store.batches) == before + 1 and store.batches[-1].entries
    assert stored(store, b"k") is None  # held
    clock.advance(HELD_FLUSH_SECONDS)
    clock.advance(0)
    assert len(store.batches) == before + 2
    flush = store.batches[-1]
    assert not flush.entries and flush.apply is not None and flush.apply.index == svc.applied
    assert stored(store, b"k") == b"v"
    assert store.load().applied == svc.applied


def test_a_light_load_is_flushed_at_the_longest_hold_and_a_batch_sooner(monkeypatch) -> None:
    """Held writes that make no batch (fewer than HELD_FLUSH_BATCH table
    writes) wait HELD_FLUSH_SECONDS for a transaction of their own; a batch
    gets one HELD_FLUSH_BATCH_SECONDS after the oldest was held."""
    store = RecordingStore()
    clock, svc = _leader(store)
    before = len(store.batches)
    _answered(clock, svc, b"k1", b"v1")
    clock.advance(HELD_FLUSH_BATCH_SECONDS)
    clock.advance(0)
    assert len(store.batches) == before + 1 and stored(store, b"k1") is None  # a few: they wait on
    clock.advance(HELD_FLUSH_SECONDS - HELD_FLUSH_BATCH_SECONDS - 0.001)
    assert len(store.batches) == before + 1
    clock.advance(0.001)
    clock.advance(0)
    assert len(store.batches) == before + 2 and stored(store, b"k1") == b"v1"
    monkeypatch.setattr(service, "HELD_FLUSH_BATCH", 1)
    _answered(clock, svc, b"k2", b"v2")
    clock.advance(HELD_FLUSH_BATCH_SECONDS)
    clock.advance(0)
    assert len(store.batches) == before + 4 and stored(store, b"k2") == b"v2"


def test_the_next_entries_transaction_carries_the_held_writes() -> None:
    store = RecordingStore()
    clock, svc = _leader(store)
    before = len(store.batches)
    _answered(clock, svc, b"k1", b"v1")
    held_index = svc.applied
    second = outcome(put(svc, b"k2", b"v2"))
    clock.advance(0)
    batch = store.batches[before + 1]
    assert batch.entries and batch.entries[-1].index == held_index + 1
    assert batch.apply is not None and batch.apply.index == held_index
    assert stored(store, b"k1") == b"v1"
    for _ in range(5):
        clock.advance(0)
    assert ok(second)
    assert len(store.batches) == before + 2  # k2's apply is held in turn


def test_writes_held_after_a_transaction_took_the_others_wait_their_own_time() -> None:
    store = RecordingStore()
    clock, svc = _leader(store)
    before = len(store.batches)
    _answered(clock, svc, b"k1", b"v1")  # k1's apply held, the flush timer set
    clock.advance(HELD_FLUSH_SECONDS / 2)
    second = outcome(put(svc, b"k2", b"v2"))  # its entries' transaction takes k1's apply
    for _ in range(5):
        clock.advance(0)
    assert ok(second) and stored(store, b"k1") == b"v1" and stored(store, b"k2") is None
    assert len(store.batches) == before + 2
    clock.advance(HELD_FLUSH_SECONDS / 2)  # the timer's time, not k2's
    clock.advance(0)
    assert len(store.batches) == before + 2 and stored(store, b"k2") is None
    clock.advance(HELD_FLUSH_SECONDS / 2)
    clock.advance(0)
    assert len(store.batches) == before + 3 and stored(store, b"k2") == b"v2"


def test_stored_flushes_the_held_writes_at_once() -> None:
    """What a copy of the store (a snapshot file) waits for: every answered
    write in the store, without waiting for the flush delay."""
    store = RecordingStore()
    clock, svc = _leader(store)
    _answered(clock, svc, b"k", b"v")
    assert stored(store, b"k") is None
    store.gated = True
    done = outcome(svc.stored())
    assert done == [] and len(store.pending) == 1  # the flush is under way
    store.release()
    assert done == [None]
    assert stored(store, b"k") == b"v"
    assert outcome(svc.stored()) == [None]  # nothing held: at once


def test_a_node_that_crashes_with_held_writes_applies_them_again() -> None:
    """The store has the entry but not its apply: a restart applies it
    again from the log (the store's applied index says where to start)."""
    store = RecordingStore()
    clock, svc = _leader(store)
    _answered(clock, svc, b"k", b"v")
    assert stored(store, b"k") is None
    store.gated = True
    svc.stopService()
    store.pending.clear()  # the crash: stopping's write never lands
    store.gated = False
    assert stored(store, b"k") is None and store.load().applied < svc.applied
    clock2 = Clock()
    again = make(["a"], clock2, Network(clock2), stores={"a": store})["a"]
    pump(clock2, 0.2)
    assert again.raft.role is Role.LEADER
    assert again.read(b"k") == b"v"


def test_a_graceful_stop_stores_the_held_writes() -> None:
    store = RecordingStore()
    clock, svc = _leader(store)
    _answered(clock, svc, b"k", b"v")
    assert stored(store, b"k") is None
    stopped = outcome(svc.stopService())
    assert stopped == [None]
    assert stored(store, b"k") == b"v"
    assert store.load().applied == svc.applied


# -- over a store that keeps its log apart (LMDB's log file) --------------------------


def test_over_a_log_file_entries_go_alone_and_the_flush_stores_the_applies() -> None:
    """Every entry write is log-only (the log file takes it with one
    fdatasync); the applied writes of several writes wait, held, for one
    transaction of their own."""
    store = RecordingStore(log_apart=True)
    clock, svc = _leader(store)
    before = len(store.batches)
    _answered(clock, svc, b"k1", b"v1")
    _answered(clock, svc, b"k2", b"v2")
    entry_writes = store.batches[before:]
    assert len(entry_writes) == 2
    assert all(b.entries and b.apply is None for b in entry_writes)
    assert stored(store, b"k1") is None and stored(store, b"k2") is None
    assert svc.read(b"k1") == b"v1" and svc.read(b"k2") == b"v2"  # from the overlay
    clock.advance(HELD_FLUSH_SECONDS)
    clock.advance(0)
    assert len(store.batches) == before + 3
    flush = store.batches[-1]
    assert not flush.entries and flush.apply is not None and flush.apply.index == svc.applied
    assert stored(store, b"k1") == b"v1" and stored(store, b"k2") == b"v2"


def _k2_under_way() -> tuple:
    """Over a log file: k1 answered (its apply held), then k2's entry write
    under way (gated). (store, clock, svc, k2's outcome)."""
    store = RecordingStore(log_apart=True)
    clock, svc = _leader(store)
    _answered(clock, svc, b"k1", b"v1")
    store.gated = True
    second = outcome(put(svc, b"k2", b"v2"))
    clock.advance(0)
    assert len(store.pending) == 1 and store.pending[0][1].entries  # k2's entry, log-only
    return store, clock, svc, second


def test_over_a_log_file_a_flush_due_during_a_write_comes_right_after_it() -> None:
    """Under steady writes a log-only write is nearly always under way when
    the flush's time comes: the flush follows it, it is not skipped."""
    store, clock, svc, second = _k2_under_way()  # k1's flush timer set
    clock.advance(HELD_FLUSH_SECONDS)  # the flush's time, during that write
    clock.advance(0)
    assert len(store.pending) == 1
    store.gated = False
    store.release()
    for _ in range(5):
        clock.advance(0)
    assert ok(second)
    assert store.batches[-1].apply is not None and not store.batches[-1].entries
    assert stored(store, b"k1") == b"v1"


def test_over_a_log_file_a_stop_during_a_write_stores_the_held_writes_after_it() -> None:
    store, clock, svc, _ = _k2_under_way()
    stopped = outcome(svc.stopService())
    assert stopped == [] and len(store.pending) == 1
    store.gated = False
    store.release()
    assert stopped == [None]
    assert stored(store, b"k1") == b"v1"
    assert store.load().applied >= 1 and store.batches[-1].apply is not None


def test_over_a_log_file_a_new_term_or_vote_is_never_left_held() -> None:
    """A Ready with a new term or vote goes to the store at once, whatever is
    held; what a log-only write carries is the newest hard state."""
    store = RecordingStore(log_apart=True)
    clock, svc = _leader(store)
    _answered(clock, svc, b"k1", b"v1")
    hard_states = [b.hard_state for b in store.batches if b.hard_state is not None]
    terms = [(hs.term, hs.vote) for hs in hard_states]
    assert terms == sorted(terms)  # never older than the one before
    assert store.load().hard_state.term == svc.raft.term


def test_over_a_log_file_stored_waits_for_a_write_under_way_then_flushes() -> None:
    store, clock, svc, _ = _k2_under_way()
    done = outcome(svc.stored())
    assert done == []
    store.release()  # the entry write lands: the flush follows at once
    assert done == [] and len(store.pending) == 1 and store.pending[0][1].apply is not None
    store.release()
    assert done == [None] and stored(store, b"k1") == b"v1"


def test_over_a_log_file_a_stop_ends_even_when_the_store_closed_meanwhile() -> None:
    """The store's service stops beside the driver: by the time the write
    under way lands, the store may refuse the held writes at once (raise).
    The stop still ends (a removed member that never exits was the bug)."""
    store, clock, svc, _ = _k2_under_way()
    stopped = outcome(svc.stopService())
    assert stopped == []

    def closed(batch):
        raise RuntimeError("the writer thread is stopped")

    pending = store.pending
    store.pending = []
    store.write = closed  # type: ignore[method-assign]
    for d, batch in pending:
        MemoryStore.write(store, batch).chainDeferred(d)
    assert stopped == [None]


def _follower_hears_k1_and_k2(store: RecordingStore, client_waits: bool = False) -> tuple:
    """Three nodes, b over store: k1 commits on a and c while b hears
    nothing, k2 is proposed, then b hears it all at once; b's store is
    gated before. If client_waits, a client of b waits for k1's apply
    there (as a read at its read index does). (clock, net, leader, b, k1's
    index, k2's outcome, the waiting client's outcome)"""
    clock = Clock()
    net = Network(clock)
    services = make(["a", "b", "c"], clock, net, stores={"b": store})
    pump(clock, 0.5)
    leader, b = leader_of(services), services["b"]
    assert leader is services["a"]
    pump(clock, HELD_FLUSH_SECONDS * 2)
    net.held.add("b")
    first = outcome(put(leader, b"k1", b"v1"))
    for _ in range(5):
        clock.advance(0)
    assert ok(first)
    k1 = leader.applied
    waiting = outcome(b.wait_applied(k1)) if client_waits else []
    second = outcome(put(leader, b"k2", b"v2"))
    clock.advance(0)
    store.gated = True
    net.release("b")
    clock.advance(0)
    return clock, net, leader, b, k1, second, waiting


def test_a_follower_acknowledges_new_entries_before_it_applies_the_committed_ones() -> None:
    """On a follower over a log file, a Ready with new entries and committed
    ones writes the new entries first (log-only) and sends their
    acknowledgement once they are stored; only then are the committed
    entries applied (their writes held). A leader's applies answer clients
    and still come first (the tests above)."""
    store = RecordingStore(log_apart=True)
    clock, net, leader, b, k1, second, _ = _follower_hears_k1_and_k2(store)
    assert len(store.pending) == 1
    batch = store.pending[0][1]
    assert batch.log_only and [e.index for e in batch.entries] == [k1, k1 + 1]
    assert b.applied < k1  # k1 is known committed, not applied yet
    assert not [m for m in net.sent[-10:] if isinstance(m, AppendResponse) and m.frm == "b" and m.index > k1]
    before, sent_before = len(store.batches), len(net.sent)
    store.gated = False
    store.release()
    acks = [m for m in net.sent[sent_before:] if isinstance(m, AppendResponse) and m.frm == "b"]
    assert acks and all(m.success for m in acks) and acks[-1].index == k1 + 1
    assert b.applied >= k1 and b.read(b"k1") == b"v1"  # applied after the write, from the overlay
    assert stored(store, b"k1") is None  # its writes held for a later transaction
    assert len(store.batches) == before
    for _ in range(5):
        clock.advance(0)
    assert ok(second)
    pump(clock, HELD_FLUSH_SECONDS * 2)
    assert stored(store, b"k1") == b"v1" and stored(store, b"k2") == b"v2"


def test_a_follower_on_which_a_client_waits_applies_first() -> None:
    """A client of the follower waiting for an apply there keeps the old
    order: the committed entries are applied (and their waiters answered)
    before the new entries are written."""
    store = RecordingStore(log_apart=True)
    _, _, _, b, k1, _, waiting = _follower_hears_k1_and_k2(store, client_waits=True)
    assert len(store.pending) == 1 and [e.index for e in store.pending[0][1].entries] == [k1, k1 + 1]
    assert b.applied >= k1 and waiting == [None]  # applied and answered before the write


def test_a_follower_flushes_its_late_applies_at_the_held_writes_bound(monkeypatch) -> None:
    """The writes a follower applies after acknowledging are held like any
    others: at HELD_FLUSH_WRITES they get a transaction at once, not at the
    flush timer."""
    monkeypatch.setattr(service, "HELD_FLUSH_WRITES", 1)
    store = RecordingStore(log_apart=True)
    _, _, _, _, k1, _, _ = _follower_hears_k1_and_k2(store)
    assert len(store.pending) == 1 and store.pending[0][1].log_only
    store.release()  # the entries; the applies pass the bound and are flushed at once
    assert len(store.pending) == 1
    flush = store.pending[0][1]
    assert not flush.entries and flush.apply is not None and flush.apply.index >= k1
    store.gated = False
    store.release()
    assert stored(store, b"k1") == b"v1"
