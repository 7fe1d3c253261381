"""Range, one etcd behaviour per test; docstrings quote etcd's rpc.proto
or name the etcd source (etcdserver/apply.go, mvcc/kvstore_txn.go)."""

from __future__ import annotations

import pytest

from dkv.mvcc import MvccStore, errors
from dkv.mvcc.layout import HISTORY
from dkv.pb.etcd_rpc_pb2 import RangeRequest
from tests.mvcc.helpers import delete, get, keys_of, put

#: In unsigned byte order, put in this order: revisions 2 to 8.
KEYS = [b"\x00", b"a", b"a\x00", b"ab", b"a\xff", b"b", b"\xff"]


@pytest.fixture
def store(tables) -> MvccStore:
    store = MvccStore(tables)
    for key in KEYS:
        put(store, key, b"value of " + key)
    return store


def test_one_key(store) -> None:
    """"If range_end is not given, the request only looks up key.\""""
    assert keys_of(get(store, b"a")) == [b"a"]
    assert get(store, b"nope").count == 0


def test_value_is_what_a_range_of_the_key_finds(store) -> None:
    """``MvccView.value``, the point read of /v0: the value a Range of that
    one key answers, None for a key never written or deleted."""
    put(store, b"a", b"newer")
    delete(store, b"b")
    for key in [*KEYS, b"nope"]:
        kvs = get(store, key).kvs
        assert store.value(key) == (kvs[0].value if kvs else None), key
    assert store.value(b"a") == b"newer"
    assert store.value(b"b") is None


def test_a_read_of_one_key_answers_as_the_general_path(store) -> None:
    """A Range of one key now with no option (or only ``serializable``,
    which the node acts on) takes a path of its own: the same answer as a
    request whose option changes nothing (a limit above one), which takes
    the general path."""
    put(store, b"a", b"newer")
    delete(store, b"b")
    for key in [*KEYS, b"nope"]:
        general = store.range(RangeRequest(key=key, limit=5))
        assert store.range(RangeRequest(key=key)) == general, key
        assert store.range(RangeRequest(key=key, serializable=True)) == general, key
    with pytest.raises(errors.EmptyKey):
        store.range(RangeRequest())


def test_from_key(store) -> None:
    """"If range_end is '\\0', the range is all keys >= key.\""""
    assert keys_of(get(store, b"ab", b"\x00")) == [b"ab", b"a\xff", b"b", b"\xff"]


def test_all_keys(store) -> None:
    """"If both key and range_end are '\\0', then the range request returns
    all keys.\""""
    assert keys_of(get(store, b"\x00", b"\x00")) == KEYS


def test_prefix(store) -> None:
    """"If range_end is key plus one (e.g., "aa"+1 == "ab", "a\\xff"+1 ==
    "b"), then the range request gets all keys prefixed with key." Keys sort
    in unsigned byte order."""
    assert keys_of(get(store, b"a", b"b")) == [b"a", b"a\x00", b"ab", b"a\xff"]


def test_an_end_before_the_key_is_empty(store) -> None:
    response = get(store, b"b", b"a")
    assert response.count == 0 and list(response.kvs) == []


def test_limit_more_and_count(store) -> None:
    """"count is set to the actual number of keys within the range when
    requested. Unlike Kvs, it is unaffected by limits and filters" and
    "more indicates if there are more keys to return in the requested
    range.\""""
    response = get(store, b"a", b"b", limit=2)
    assert keys_of(response) == [b"a", b"a\x00"] and response.more and response.count == 4
    response = get(store, b"a", b"b", limit=4)
    assert len(response.kvs) == 4 and not response.more


def test_a_limit_of_zero_or_less_is_no_limit(store) -> None:
    """"When limit is set to 0, it is treated as no limit." (etcd also
    ignores negative limits.)"""
    assert len(get(store, b"\x00", b"\x00", limit=0).kvs) == len(KEYS)
    assert len(get(store, b"\x00", b"\x00", limit=-3).kvs) == len(KEYS)


def test_keys_only(store) -> None:
    """"keys_only when set returns only the keys and not the values." The
    other fields stay, and no value is read."""
    put(store, b"a", b"again", lease=3)
    [kv] = get(store, b"a", keys_only=True).kvs
    assert (kv.key, kv.value, kv.version, kv.mod_revision, kv.create_revision, kv.lease) == (b"a", b"", 2, 9, 3, 3)


def test_count_only(store) -> None:
    """"count_only when set returns only the count of the keys in the
    range." (and no kvs)"""
    response = get(store, b"a", b"b", count_only=True, limit=1)
    assert response.count == 4 and list(response.kvs) == [] and not response.more


def test_mod_and_create_revision_filters(store) -> None:
    """"min_mod_revision is the lower bound for returned key mod revisions;
    all keys with lesser mod revisions will be filtered away" (and so on
    for max_mod, min_create, max_create); count stays the whole range's."""
    put(store, b"a", b"x")  # a: create 3, mod 9
    response = get(store, b"\x00", b"\x00", min_mod_revision=5)
    assert keys_of(response) == [b"a", b"ab", b"a\xff", b"b", b"\xff"] and response.count == 7
    assert keys_of(get(store, b"\x00", b"\x00", max_mod_revision=3)) == [b"\x00"]
    assert keys_of(get(store, b"\x00", b"\x00", min_create_revision=7)) == [b"b", b"\xff"]
    assert keys_of(get(store, b"\x00", b"\x00", max_create_revision=3, min_mod_revision=9)) == [b"a"]


def test_limit_applies_after_filters_and_sorting(store) -> None:
    """etcd fetches every key when it sorts or filters, then truncates."""
    response = get(store, b"\x00", b"\x00", min_create_revision=4, limit=2, sort_order=RangeRequest.DESCEND)
    assert keys_of(response) == [b"\xff", b"b"] and response.more


def test_order_none_with_a_target_and_a_limit_sorts_the_first_limit_plus_one_keys(store) -> None:
    """etcd reads limit + 1 keys in key order when the request's own order
    is NONE (its rangeLimit), then sorts them ASCEND by the target: the keys
    it did not read are not considered. An order, or a filter, reads all."""
    put(store, b"a", b"v")  # mod revisions now: a 9, a\0 10, ab 5, a\xff 6
    put(store, b"a\x00", b"v")
    none = get(store, b"a", b"b", sort_order=RangeRequest.NONE, sort_target=RangeRequest.MOD, limit=1)
    assert keys_of(none) == [b"a"] and none.more and none.count == 4
    two = get(store, b"a", b"b", sort_order=RangeRequest.NONE, sort_target=RangeRequest.MOD, limit=2)
    assert keys_of(two) == [b"ab", b"a"] and two.more  # read a, a\0, ab
    ascend = get(store, b"a", b"b", sort_order=RangeRequest.ASCEND, sort_target=RangeRequest.MOD, limit=1)
    assert keys_of(ascend) == [b"ab"]
    filtered = get(
        store, b"a", b"b", sort_order=RangeRequest.NONE, sort_target=RangeRequest.MOD, limit=1, min_mod_revision=1
    )
    assert keys_of(filtered) == [b"ab"]
    by_value = get(store, b"a", b"b", sort_target=RangeRequest.VALUE, limit=1)
    assert keys_of(by_value) == [b"a"]  # read a, a\0 ("v" both): ties in key order


@pytest.mark.parametrize(
    ("order", "target", "expected"),
    [
        (RangeRequest.DESCEND, RangeRequest.KEY, [b"a\xff", b"ab", b"a\x00", b"a"]),
        (RangeRequest.ASCEND, RangeRequest.KEY, [b"a", b"a\x00", b"ab", b"a\xff"]),
        (RangeRequest.NONE, RangeRequest.MOD, [b"a\x00", b"ab", b"a\xff", b"a"]),
        (RangeRequest.DESCEND, RangeRequest.MOD, [b"a", b"a\xff", b"ab", b"a\x00"]),
        (RangeRequest.ASCEND, RangeRequest.CREATE, [b"a", b"a\x00", b"ab", b"a\xff"]),
        (RangeRequest.DESCEND, RangeRequest.VALUE, [b"a", b"a\xff", b"ab", b"a\x00"]),
        (RangeRequest.ASCEND, RangeRequest.VERSION, [b"a\x00", b"ab", b"a\xff", b"a"]),
        (RangeRequest.DESCEND, RangeRequest.VERSION, [b"a", b"a\x00", b"ab", b"a\xff"]),
    ],
)
def test_sorting(store, order, target, expected) -> None:
    """etcd's Range sorts by sort_target; "Since current mvcc.Range
    implementation returns results sorted by keys in lexiographically
    ascending order, sort ASCEND by default only when target is not 'KEY'".
    Equal targets keep key order, also descending."""
    put(store, b"a", b"zzz")  # a: version 2, newest mod, greatest value
    response = get(store, b"a", b"b", sort_order=order, sort_target=target)
    assert keys_of(response) == expected


def test_sorting_by_value_with_keys_only(store) -> None:
    response = get(store, b"a", b"b", sort_order=RangeRequest.DESCEND, sort_target=RangeRequest.VALUE, keys_only=True)
    assert keys_of(response) == [b"a\xff", b"ab", b"a\x00", b"a"]
    assert all(kv.value == b"" for kv in response.kvs)


def test_reading_the_past(store) -> None:
    """"revision is the point-in-time of the key-value store to use for the
    range." The header still carries the store's revision."""
    put(store, b"a", b"second")
    delete(store, b"ab")
    put(store, b"new", b"n")
    at_seven = get(store, b"a", b"\x00", revision=7)
    assert keys_of(at_seven) == [b"a", b"a\x00", b"ab", b"a\xff", b"b"]
    assert at_seven.kvs[0].value == b"value of a" and at_seven.header.revision == 11
    at_nine = get(store, b"a", b"\x00", revision=9)
    assert keys_of(at_nine) == [b"a", b"a\x00", b"ab", b"a\xff", b"b", b"\xff"] and at_nine.kvs[0].value == b"second"
    assert keys_of(get(store, b"a", b"\x00", revision=10)) == [b"a", b"a\x00", b"a\xff", b"b", b"\xff"]
    assert keys_of(get(store, b"a", b"\x00")) == [b"a", b"a\x00", b"a\xff", b"b", b"new", b"\xff"]
    assert keys_of(get(store, b"a", b"\x00", revision=2)) == []


def test_a_revision_of_zero_or_less_is_the_newest(store) -> None:
    """"If revision is less or equal to zero, the range is over the newest
    key-value store.\""""
    assert get(store, b"a", revision=-1).kvs[0].mod_revision == 3
    assert get(store, b"a", revision=0).kvs[0].mod_revision == 3


def test_future_and_compacted_revisions(store) -> None:
    """"If the revision has been compacted, ErrCompacted is returned";
    a revision above the store's is ErrFutureRev (mvcc/kvstore_txn.go); a
    read at exactly the compacted revision works."""
    with pytest.raises(errors.FutureRevision) as raised:
        get(store, b"a", revision=store.revision + 1)
    assert str(raised.value) == "etcdserver: mvcc: required revision is a future revision"
    store.compact(5)
    with pytest.raises(errors.Compacted) as raised:
        get(store, b"a", revision=4)
    assert str(raised.value) == "etcdserver: mvcc: required revision has been compacted"
    assert keys_of(get(store, b"\x00", b"\x00", revision=5)) == KEYS[:4]


def test_empty_key(store) -> None:
    with pytest.raises(errors.EmptyKey):
        get(store, b"")


def test_a_range_reads_only_the_values_it_returns(store, tables) -> None:
    """O(k) scan of the range plus the returned values: a limited range
    reads limit values from the history, keys_only and count_only none."""
    tables.reset()
    get(store, b"\x00", b"\x00", limit=2)
    assert tables.scanned == {"mvcc.live": len(KEYS)} and tables.writes == {}
    tables.reset()
    get(store, b"\x00", b"\x00", keys_only=True)
    get(store, b"\x00", b"\x00", count_only=True)
    assert HISTORY not in tables.scanned
