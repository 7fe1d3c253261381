"""Writes of the multi-version store, one etcd behaviour per test. The
docstrings quote etcd's documentation (api/etcdserverpb/rpc.proto,
api/mvccpb/kv.proto) or say which etcd source the behaviour comes from."""

from __future__ import annotations

import pytest

from dkv.mvcc import MvccStore, MvccView, errors
from dkv.mvcc.layout import HISTORY, INDEX, LIVE, META
from dkv.pb.etcd_kv_pb2 import Event, KeyValue
from dkv.pb.etcd_rpc_pb2 import PutRequest, RangeRequest
from dkv.storage.tables import MemoryTables
from tests.mvcc.helpers import (
    compare,
    delete,
    get,
    keys_of,
    op_delete,
    op_put,
    op_range,
    op_txn,
    put,
    txn,
)

# ---- revisions ----


def test_an_empty_store_is_at_revision_1(store) -> None:
    """etcd's store starts with currentRev 1 (mvcc/kvstore.go), so the
    first write makes revision 2."""
    assert store.revision == 1 and store.compact_revision == -1
    assert get(store, b"k").header.revision == 1
    assert put(store, b"k", b"v").header.revision == 2


def test_one_revision_per_write_whatever_it_touches(store) -> None:
    """"A txn request increments the revision of the key-value store and
    generates events with the same revision for every completed request.\""""
    written = store.txn(txn(success=[op_put(b"a"), op_put(b"b"), op_put(b"c")]))
    assert written.response.header.revision == store.revision == 2
    assert [e.kv.mod_revision for e in written.events] == [2, 2, 2]
    deleted = store.delete_range(op_delete(b"a", b"\x00").request_delete_range)
    assert deleted.response.deleted == 3 and store.revision == 3


def test_a_delete_that_deletes_nothing_keeps_the_revision(store) -> None:
    """etcd's DeleteRange returns the old revision when nothing was deleted
    (mvcc/kvstore_txn.go)."""
    put(store, b"k")
    written = store.delete_range(op_delete(b"nothing").request_delete_range)
    assert written.response.header.revision == store.revision == 2
    assert written.response.deleted == 0 and written.events == ()


# ---- put ----


def test_versions_of_a_key(store) -> None:
    """"version is the version of the key. A deletion resets the version to
    zero and any modification of the key increases its version.\""""
    put(store, b"k", b"1")
    put(store, b"k", b"2", lease=7)
    [kv] = get(store, b"k").kvs
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease) == (2, 3, 2, b"2", 7)
    delete(store, b"k")
    put(store, b"k", b"3")
    [kv] = get(store, b"k").kvs
    assert (kv.create_revision, kv.mod_revision, kv.version) == (5, 5, 1)


def test_put_prev_kv(store) -> None:
    """"If prev_kv is set, etcd gets the previous key-value pair before
    changing it. The previous key-value pair will be returned in the put
    response.\""""
    assert not put(store, b"k", b"1", prev_kv=True).HasField("prev_kv")
    response = put(store, b"k", b"2", prev_kv=True)
    assert response.prev_kv == KeyValue(key=b"k", value=b"1", create_revision=2, mod_revision=2, version=1)


def test_ignore_value_and_ignore_lease_keep_the_current_ones(store) -> None:
    """"If ignore_value is set, etcd updates the key using its current
    value." Same for ignore_lease and the lease."""
    put(store, b"k", b"v", lease=5)
    put(store, b"k", ignore_value=True, lease=6)
    put(store, b"k", b"w", ignore_lease=True)
    [kv] = get(store, b"k").kvs
    assert (kv.value, kv.lease, kv.version) == (b"w", 6, 3)


@pytest.mark.parametrize("flag", ["ignore_value", "ignore_lease"])
def test_ignore_flags_on_a_missing_key(store, tables, flag: str) -> None:
    """"Returns an error if the key does not exist": etcdserver's
    ErrKeyNotFound, "etcdserver: key not found", InvalidArgument."""
    with pytest.raises(errors.KeyNotFound) as raised:
        put(store, b"k", **{flag: True})
    assert str(raised.value) == "etcdserver: key not found"
    assert raised.value.code == errors.Code.INVALID_ARGUMENT
    assert tables.writes == {} and store.revision == 1


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"key": b""}, errors.EmptyKey),
        ({"key": b"k", "value": b"v", "ignore_value": True}, errors.ValueProvided),
        ({"key": b"k", "lease": 1, "ignore_lease": True}, errors.LeaseProvided),
    ],
)
def test_put_request_checks(store, tables, options, error) -> None:
    """etcd's checkPutRequest (v3rpc/key.go)."""
    with pytest.raises(error):
        store.put(PutRequest(**options))
    assert tables.writes == {}


def test_a_put_writes_four_table_entries(store, tables) -> None:
    """O(log n) per put: one history record, one index entry, one live
    entry, the revision counter; reads are a live lookup (and a history read
    only when the old version is wanted)."""
    put(store, b"k", b"v")
    put(store, b"k", b"w")
    tables.reset()
    put(store, b"k", b"x")
    assert tables.writes == {HISTORY: 1, INDEX: 1, LIVE: 1, META: 1}
    assert sum(tables.scanned.values()) == 0


def test_keys_and_values_at_the_limits(store) -> None:
    """Keys up to dkv's --max-key-size (4096 bytes, any bytes) and values of
    etcd's request limit (~1.5 MiB) go in and come back."""
    key = bytes(range(256)) * 16
    value = b"\x00\xff" * (768 * 1024)
    put(store, key, value)
    put(store, key[:-1], b"shorter")
    response = get(store, key[:-1], b"\x00")
    assert keys_of(response) == [key[:-1], key]
    assert response.kvs[1].value == value


# ---- leases ----


class RecordingLeases:
    def __init__(self, granted: set[int]) -> None:
        self.granted = granted
        self.calls: list[tuple[str, int, bytes]] = []

    def exists(self, lease: int) -> bool:
        return lease in self.granted

    def attach(self, lease: int, key: bytes) -> None:
        self.calls.append(("attach", lease, key))

    def detach(self, lease: int, key: bytes) -> None:
        self.calls.append(("detach", lease, key))


def test_an_unknown_lease_is_refused(tables) -> None:
    """etcd's Put looks the lease up first: lease.ErrLeaseNotFound,
    "etcdserver: requested lease not found", NotFound."""
    store = MvccStore(tables, leases=RecordingLeases({1}))
    with pytest.raises(errors.LeaseNotFound):
        put(store, b"k", lease=2)
    with pytest.raises(errors.LeaseNotFound):
        store.txn(txn(success=[op_put(b"k", lease=2)]))
    assert tables.writes == {}
    put(store, b"k", lease=1)


def test_the_lease_hook_hears_attaches_and_detaches(tables) -> None:
    """As etcd's put and delete attach and detach keys (mvcc/kvstore_txn.go)."""
    leases = RecordingLeases({1, 2})
    store = MvccStore(tables, leases=leases)
    put(store, b"k", lease=1)
    put(store, b"k", lease=1)
    put(store, b"k", lease=2)
    put(store, b"k")
    put(store, b"k", lease=1)
    delete(store, b"k")
    assert leases.calls == [
        ("attach", 1, b"k"),
        ("detach", 1, b"k"),
        ("attach", 2, b"k"),
        ("detach", 2, b"k"),
        ("attach", 1, b"k"),
        ("detach", 1, b"k"),
    ]


# ---- delete ----


def test_delete_range_prev_kvs_and_count(store) -> None:
    """"If prev_kv is set, etcd gets the previous key-value pairs before
    deleting it." and "deleted is the number of keys deleted\""""
    for key in (b"a", b"ab", b"b"):
        put(store, key, key)
    response = delete(store, b"a", b"b", prev_kv=True)
    assert response.deleted == 2
    assert [(kv.key, kv.value) for kv in response.prev_kvs] == [(b"a", b"a"), (b"ab", b"ab")]
    assert keys_of(get(store, b"\x00", b"\x00")) == [b"b"]


def test_delete_events(store) -> None:
    """"A DELETE/EXPIRE event contains the deleted key with its modification
    revision set to the revision of deletion.\""""
    put(store, b"a")
    put(store, b"b")
    written = store.delete_range(op_delete(b"a", b"\x00").request_delete_range)
    assert list(written.events) == [
        Event(type=Event.DELETE, kv=KeyValue(key=b"a", mod_revision=4)),
        Event(type=Event.DELETE, kv=KeyValue(key=b"b", mod_revision=4)),
    ]


def test_events_carry_prev_kv_when_the_store_is_asked(tables) -> None:
    store = MvccStore(tables, prev_kv_in_events=True)
    put(store, b"k", b"1")
    [event] = store.put(PutRequest(key=b"k", value=b"2")).events
    assert event.prev_kv.value == b"1" and event.kv.value == b"2"
    [event] = store.delete_range(op_delete(b"k").request_delete_range).events
    assert event.prev_kv.value == b"2"
    [event] = store.put(PutRequest(key=b"k", value=b"3")).events
    assert not event.HasField("prev_kv")


# ---- txn ----


@pytest.mark.parametrize(
    ("target", "result", "wanted", "holds"),
    [
        ("VALUE", "EQUAL", b"v", True),
        ("VALUE", "LESS", b"w", True),
        ("VALUE", "GREATER", b"w", False),
        ("VALUE", "NOT_EQUAL", b"v", False),
        ("VERSION", "EQUAL", 2, True),
        ("VERSION", "GREATER", 1, True),
        ("CREATE", "EQUAL", 2, True),
        ("CREATE", "LESS", 2, False),
        ("MOD", "EQUAL", 3, True),
        ("MOD", "NOT_EQUAL", 3, False),
        ("LEASE", "EQUAL", 9, True),
        ("LEASE", "LESS", 10, True),
    ],
)
def test_compare_targets_and_results(store, target, result, wanted, holds) -> None:
    """etcd's compareKV on each target (VALUE, VERSION, CREATE, MOD, LEASE)
    with each result (EQUAL, GREATER, LESS, NOT_EQUAL)."""
    put(store, b"k", b"x")
    put(store, b"k", b"v", lease=9)
    response = store.txn(txn([compare(b"k", target, result, wanted)])).response
    assert response.succeeded is holds


def test_compares_on_a_missing_key(store) -> None:
    """etcd: "Always fail if comparing a value on a key/keys that doesn't
    exist"; other targets compare against a zero KeyValue, so a missing key
    has version 0 (the usual create-if-absent txn)."""
    assert not store.txn(txn([compare(b"k", "VALUE", "EQUAL", b"")])).response.succeeded
    assert not store.txn(txn([compare(b"k", "VALUE", "NOT_EQUAL", b"x")])).response.succeeded
    assert store.txn(txn([compare(b"k", "VERSION", "EQUAL", 0)])).response.succeeded
    assert store.txn(txn([compare(b"k", "CREATE", "LESS", 1)])).response.succeeded


def test_compare_over_a_range(store) -> None:
    """"range_end compares the given target to all keys in the range [key,
    range_end)": every key must satisfy it."""
    put(store, b"a1", b"x")
    put(store, b"a2", b"x")
    put(store, b"b", b"y")
    assert store.txn(txn([compare(b"a", "VALUE", "EQUAL", b"x", range_end=b"b")])).response.succeeded
    assert not store.txn(txn([compare(b"a", "VALUE", "EQUAL", b"x", range_end=b"\x00")])).response.succeeded
    assert store.txn(txn([compare(b"a", "MOD", "LESS", 5, range_end=b"\x00")])).response.succeeded


def test_txn_sample_of_the_gateway_facts(store) -> None:
    """The compare-and-swap of /work/shared/etcd-gateway-facts.md: success
    runs, its put answers with revision 4."""
    put(store, b"foo", b"bar")
    put(store, b"foo", b"baz")
    response = store.txn(
        txn([compare(b"foo", "VALUE", "EQUAL", b"baz")], [op_put(b"foo", b"qux")], [op_range(b"foo")])
    ).response
    assert response.succeeded and response.header.revision == 4
    assert response.responses[0].response_put.header.revision == 4


def test_reads_in_a_txn_see_its_earlier_writes(store) -> None:
    """etcd's storeTxnWrite.Range reads at beginRev + 1 once the txn has
    changed something: later operations see earlier ones, and the range's
    header carries that revision."""
    put(store, b"a", b"old")
    response = store.txn(
        txn(success=[op_range(b"a"), op_put(b"a", b"new"), op_range(b"a"), op_delete(b"b"), op_range(b"a", revision=2)])
    ).response
    first, _put, second, deleted, at_two = response.responses
    assert first.response_range.kvs[0].value == b"old" and first.response_range.header.revision == 2
    assert second.response_range.kvs[0].value == b"new" and second.response_range.header.revision == 3
    assert deleted.response_delete_range.header.revision == 3
    assert at_two.response_range.kvs[0].value == b"old"


def test_nested_compares_see_the_store_before_the_txn(store) -> None:
    """etcd evaluates every compare of a txn, nested ones included, before
    running any operation (compareToPath in etcdserver/apply.go)."""
    inner = op_txn([compare(b"k", "VERSION", "EQUAL", 0)], [op_put(b"inner", b"then")], [op_put(b"inner", b"else")])
    response = store.txn(txn(success=[op_put(b"k", b"v"), inner])).response
    assert response.responses[1].response_txn.succeeded
    assert get(store, b"inner").kvs[0].value == b"then"


def test_nested_txn_responses(store) -> None:
    """A nested txn's response has an empty header (etcd fills only the
    outer one); its own operations carry theirs."""
    response = store.txn(txn(success=[op_txn(success=[op_put(b"k")])])).response
    nested = response.responses[0].response_txn
    assert nested.HasField("header") and nested.header.revision == 0
    assert nested.succeeded and nested.responses[0].response_put.header.revision == 2


def test_a_read_only_txn_keeps_the_revision(store) -> None:
    put(store, b"k")
    written = store.txn(txn(success=[op_range(b"k")], failure=[op_put(b"k")]))
    assert written.response.header.revision == store.revision == 2 and written.events == ()


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        (op_put(b"missing", ignore_value=True), errors.KeyNotFound),
        (op_range(b"k", revision=9), errors.FutureRevision),
        (op_txn(success=[op_range(b"k", revision=9)]), errors.FutureRevision),
    ],
)
def test_a_failing_operation_fails_the_whole_txn_before_any_write(store, tables, operation, error) -> None:
    """etcd checks the operations of the path (checkRequests in
    etcdserver/apply.go) before it writes: the txn fails and nothing
    changes."""
    put(store, b"k")
    before = tables.dump()
    with pytest.raises(error):
        store.txn(txn(success=[op_put(b"x"), operation, op_put(b"y")]))
    assert tables.dump() == before and store.revision == 2


def test_negative_range_revisions_in_a_txn(store) -> None:
    """Outside a txn a revision <= 0 means the newest. Inside one, etcd's
    checkRequestRange refuses a revision below the compacted one, negative
    ones included (before any compaction the compacted revision is -1, so
    -1 passes and -2 does not)."""
    put(store, b"k")
    assert get(store, b"k", revision=-5).kvs[0].key == b"k"
    assert store.txn(txn(success=[op_range(b"k", revision=-1)])).response.responses[0].response_range.count == 1
    with pytest.raises(errors.Compacted):
        store.txn(txn(success=[op_range(b"k", revision=-2)]))


def test_only_the_path_taken_is_checked(store) -> None:
    """Only the operations of the path taken are checked."""
    response = store.txn(txn([compare(b"k", "VERSION", "EQUAL", 0)], [op_put(b"k")], [op_range(b"k", revision=9)]))
    assert response.response.succeeded


# ---- determinism ----


def test_a_new_store_over_the_same_tables_continues(tables, store) -> None:
    """Restart and snapshot install: the tables are the truth."""
    put(store, b"a", b"1")
    put(store, b"a", b"2")
    store.compact(2)
    again = MvccStore(tables)
    assert (again.revision, again.compact_revision) == (3, 2)
    assert put(again, b"a", b"3").header.revision == 4
    assert get(MvccView(tables), b"a", revision=3).kvs[0].value == b"2"


def test_two_replicas_hold_identical_tables() -> None:
    first, second = MemoryTables(), MemoryTables()
    for tables in (first, second):
        store = MvccStore(tables)
        put(store, b"a", b"1")
        store.txn(txn(success=[op_put(b"b"), op_delete(b"a")]))
        store.compact(3)
    assert first._data == second._data


def test_the_view_reads_without_writing(tables, store) -> None:
    put(store, b"k", b"v")
    view = MvccView(tables)
    tables.reset()
    assert view.range(RangeRequest(key=b"k")).kvs[0].value == b"v"
    assert view.events(1) and view.hash_kv()
    assert tables.writes == {}
