"""Compaction, the event history and HashKV. Docstrings quote etcd's
rpc.proto or name the etcd source of the behaviour."""

from __future__ import annotations

import pytest

from dkv.mvcc import MvccStore, MvccView, errors
from dkv.mvcc.keys import parse_revision_key
from dkv.mvcc.layout import HISTORY, INDEX
from dkv.pb.etcd_kv_pb2 import Event
from dkv.pb.etcd_rpc_pb2 import DeleteRangeRequest
from dkv.storage.tables import MemoryTables
from tests.mvcc.helpers import delete, get, keys_of, op_put, put, txn
from tests.mvcc.invariants import check_derived_tables


def history_revisions(tables) -> list[int]:
    return [parse_revision_key(key)[0] for key, _ in MemoryTables.scan(tables, HISTORY)]


# ---- compaction ----


def test_compact_errors(store) -> None:
    """etcd's updateCompactRev: a revision at or below the compacted one is
    ErrCompacted, above the current one ErrFutureRev; the current one is
    fine."""
    put(store, b"k")
    with pytest.raises(errors.FutureRevision):
        store.compact(3)
    assert store.compact(2).header.revision == 2
    with pytest.raises(errors.Compacted):
        store.compact(2)
    with pytest.raises(errors.Compacted):
        store.compact(1)


def test_compaction_keeps_what_reads_at_or_above_it_need(store, tables) -> None:
    """ "All superseded keys with a revision less than the compaction
    revision will be removed": for each key the newest version at or below
    the compacted revision stays (if it is not a delete), and everything
    above it."""
    put(store, b"a", b"1")  # 2
    put(store, b"a", b"2")  # 3
    put(store, b"b", b"1")  # 4
    delete(store, b"b")  # 5
    put(store, b"c", b"1")  # 6
    put(store, b"a", b"3")  # 7
    store.compact(6)
    assert history_revisions(tables) == [3, 6, 7]
    assert [(kv.key, kv.value) for kv in get(store, b"\x00", b"\x00", revision=6).kvs] == [(b"a", b"2"), (b"c", b"1")]
    assert [kv.value for kv in get(store, b"\x00", b"\x00").kvs] == [b"3", b"1"]
    with pytest.raises(errors.Compacted):
        get(store, b"a", revision=5)
    check_derived_tables(tables)


def test_a_delete_at_the_compacted_revision_stays_until_the_next_compaction(store, tables) -> None:
    """etcd drops a delete at exactly the compacted revision, and a watcher
    starting there then misses it; we keep it, so that the events of the
    compacted revision stay whole, and drop it at the next compaction."""
    put(store, b"k")  # 2
    delete(store, b"k")  # 3
    put(store, b"other")  # 4
    store.compact(3)
    assert history_revisions(tables) == [3, 4]
    assert [e.type for e in store.events(3)] == [Event.DELETE, Event.PUT]
    assert keys_of(get(store, b"\x00", b"\x00", revision=3)) == []
    store.compact(4)
    assert history_revisions(tables) == [4]
    check_derived_tables(tables)


def test_compaction_work_is_the_history_since_the_last_one(store, tables) -> None:
    """No full scan: a compaction reads the history written since the
    previous compaction and one index seek per change in it."""
    for i in range(200):
        put(store, b"key%03d" % i, b"v")
    store.compact(store.revision)
    for i in range(5):
        put(store, b"key%03d" % i, b"w")
    tables.reset()
    store.compact(store.revision)
    assert tables.scanned[HISTORY] == 6  # the newest at the last compaction, and the 5 since
    assert tables.scanned[INDEX] <= 6
    assert len(history_revisions(tables)) == 200


def test_compaction_is_the_same_on_every_replica() -> None:
    dumps = []
    for _ in range(2):
        tables = MemoryTables()
        store = MvccStore(tables)
        for i in range(30):
            store.txn(txn(success=[op_put(b"k%d" % (i % 7), b"%d" % i), op_put(b"j%d" % (i % 3), b"x")]))
            if i % 10 == 9:
                store.compact(store.revision - 4)
        dumps.append(tables._data)
    assert dumps[0] == dumps[1]


# ---- the event history ----


@pytest.fixture
def history(store) -> MvccStore:
    put(store, b"a", b"1")  # 2
    store.txn(txn(success=[op_put(b"b", b"1"), op_put(b"c", b"1")]))  # 3
    put(store, b"a", b"2")  # 4
    delete(store, b"a", b"\x00")  # 5: a, b, c
    put(store, b"a", b"3")  # 6
    return store


def summary(events) -> list[tuple[int, str, bytes]]:
    return [(e.kv.mod_revision, Event.EventType.Name(e.type), e.kv.key) for e in events]


def test_events_in_revision_order(history) -> None:
    """Every change, in revision order and in txn order within a revision;
    "A PUT event with kv.Version=1 indicates the creation of a key.\""""
    events = history.events(2)
    assert summary(events) == [
        (2, "PUT", b"a"), (3, "PUT", b"b"), (3, "PUT", b"c"), (4, "PUT", b"a"),
        (5, "DELETE", b"a"), (5, "DELETE", b"b"), (5, "DELETE", b"c"), (6, "PUT", b"a"),
    ]  # fmt: skip
    assert [e.kv.version for e in events if e.type == Event.PUT] == [1, 1, 1, 2, 1]
    assert summary(history.events(3, 4)) == [(3, "PUT", b"b"), (3, "PUT", b"c"), (4, "PUT", b"a")]


@pytest.mark.parametrize(
    ("limit", "revisions"),
    [
        (1, [2]),
        (2, [2]),
        (3, [2, 3]),
        (4, [2, 3, 4]),
        (5, [2, 3, 4]),
        (6, [2, 3, 4]),
        (7, [2, 3, 4, 5]),
        (8, [2, 3, 4, 5, 6]),
    ],
)
def test_an_event_limit_never_splits_a_revision(history, limit, revisions) -> None:
    assert sorted({e.kv.mod_revision for e in history.events(2, limit=limit)}) == revisions
    assert [e.kv.mod_revision for e in history.events(5, limit=1)] == [5, 5, 5]


def test_events_below_the_compacted_revision(history) -> None:
    """A watch "cannot start from a compacted revision": etcd cancels it
    with the compacted revision; at the compacted revision it starts."""
    history.compact(4)
    with pytest.raises(errors.Compacted):
        history.events(3)
    assert summary(history.events(4))[0] == (4, "PUT", b"a")


def test_events_from_the_future_are_none_yet(history) -> None:
    assert history.events(7) == [] and history.events(100, 200) == []


def test_events_prev_kv(history) -> None:
    """etcd's watch fills prev_kv from a read at the revision before the
    event; nothing when the key did not exist then or that revision is
    compacted."""
    events = history.events(2, prev_kv=True)
    assert [e.prev_kv.value for e in events] == [b"", b"", b"", b"1", b"2", b"1", b"1", b""]
    assert [e.HasField("prev_kv") for e in events] == [False, False, False, True, True, True, True, False]
    history.compact(4)
    assert [e.HasField("prev_kv") for e in history.events(4, prev_kv=True)] == [False, True, True, True, False]
    history.compact(5)
    assert [e.HasField("prev_kv") for e in history.events(5, prev_kv=True)] == [False, False, False, False]


def test_write_events_match_the_history(tables) -> None:
    """What a write returns is what the history says afterwards."""
    store = MvccStore(tables, prev_kv_in_events=True)
    written = []
    written += store.put(op_put(b"a", b"1").request_put).events
    written += store.txn(txn(success=[op_put(b"a", b"2"), op_put(b"b")])).events
    written += store.delete_range(DeleteRangeRequest(key=b"a", range_end=b"\x00")).events
    assert written == MvccView(tables).events(1, prev_kv=True)


# ---- HashKV ----


def replicas(count: int = 2) -> list[MvccStore]:
    stores = [MvccStore(MemoryTables()) for _ in range(count)]
    for store in stores:
        put(store, b"a", b"1")
        put(store, b"b", b"2")
        delete(store, b"a")
    return stores


def test_hash_kv_is_equal_on_replicas() -> None:
    first, second = replicas()
    assert first.hash_kv() == second.hash_kv()
    assert first.hash_kv()[1] == -1
    first.compact(3)
    second.compact(3)
    assert first.hash_kv() == second.hash_kv() and first.hash_kv()[1] == 3


def test_hash_kv_at_a_revision_ignores_what_came_after() -> None:
    """A member ahead of another gives the same hash at the other's
    revision: HashKV "computes the hash of all MVCC keys up to a given
    revision"."""
    first, second = replicas()
    before = first.hash_kv(4)
    put(first, b"c", b"3")
    assert first.hash_kv(4) == before == second.hash_kv()
    assert first.hash_kv() != before


def test_hash_kv_sees_a_difference() -> None:
    first, second = replicas()
    put(first, b"c", b"3")
    put(second, b"c", b"4")
    assert first.hash_kv()[0] != second.hash_kv()[0]


def test_hash_kv_errors() -> None:
    """etcd's HashByRev: ErrCompacted for 0 < revision <= the compacted
    revision, ErrFutureRev above the current one."""
    [store] = replicas(1)
    store.compact(3)
    with pytest.raises(errors.Compacted):
        store.hash_kv(3)
    with pytest.raises(errors.FutureRevision):
        store.hash_kv(5)
    assert store.hash_kv(4) == store.hash_kv(0)
