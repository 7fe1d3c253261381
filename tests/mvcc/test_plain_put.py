"""The store's plain put (``MvccStore._plain_put``: key = value and nothing
else, the hot write of every member) against the general put it stands in
for: random writes -- plain puts, puts with leases, prev_kv or ignore_*,
deletes, lease grants and revokes -- applied to two stores, one of which
never takes the plain path, give the same answers, the same events and the
same tables after every write."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkv.mvcc import MvccStore, errors, lease_ops
from dkv.mvcc.leases import TableLeases
from dkv.pb.etcd_rpc_pb2 import DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest
from dkv.storage.tables import MemoryTables
from tests.mvcc.strategies import VALUES

#: Few keys, so that keys gather versions; edges of the key encoding among them.
FEW_KEYS = [b"a", b"a\x00", b"ab", b"\xff"]
LEASES = [0, 0, 0, 0, 0, 1, 2, 9]  # 9 is never granted


class GeneralStore(MvccStore):
    """A store whose every put takes the general path."""

    def _plain_put(self, key: bytes, value: bytes):
        return self._put(PutRequest(key=key, value=value))


def _puts():
    return st.builds(
        lambda key, value, lease, prev_kv, ignore: PutRequest(
            key=key,
            value=b"" if ignore == "value" else value,
            lease=0 if ignore == "lease" else lease,
            prev_kv=prev_kv,
            ignore_value=ignore == "value",
            ignore_lease=ignore == "lease",
        ),
        st.sampled_from([*FEW_KEYS, *FEW_KEYS, b""]),
        st.sampled_from(VALUES),
        st.sampled_from(LEASES),
        st.integers(0, 4).map(lambda n: n == 0),
        st.sampled_from([None] * 8 + ["value", "lease"]),
    )


WRITES = st.lists(
    st.one_of(
        _puts(),
        _puts(),
        _puts(),
        st.builds(DeleteRangeRequest, key=st.sampled_from(FEW_KEYS), range_end=st.sampled_from([b"", b"\x00"])),
        st.builds(LeaseGrantRequest, ID=st.sampled_from([1, 2]), TTL=st.just(5)),
        st.builds(LeaseRevokeRequest, ID=st.sampled_from([1, 2])),
    ),
    min_size=1,
    max_size=40,
)


def _write(store: MvccStore, leases: TableLeases, request):
    """(response, events) of request, or the etcd error it raised."""
    try:
        if isinstance(request, PutRequest):
            written = store.put(request)
        elif isinstance(request, DeleteRangeRequest):
            written = store.delete_range(request)
        elif isinstance(request, LeaseGrantRequest):
            return lease_ops.grant(store, leases, request), ()
        else:
            written = lease_ops.revoke(store, leases, request)
    except errors.EtcdError as e:
        return type(e)
    return written.response, written.events


@settings(max_examples=400, deadline=None)
@given(writes=WRITES, revision_at_flush=st.booleans())
def test_plain_puts_write_what_the_general_put_writes(writes, revision_at_flush: bool) -> None:
    plain_tables, general_tables = MemoryTables(), MemoryTables()
    plain_leases, general_leases = TableLeases(plain_tables), TableLeases(general_tables)
    plain = MvccStore(plain_tables, leases=plain_leases, revision_at_flush=revision_at_flush)
    general = GeneralStore(general_tables, leases=general_leases, revision_at_flush=revision_at_flush)
    for request in writes:
        assert _write(plain, plain_leases, request) == _write(general, general_leases, request)
        plain.flush_revision()
        general.flush_revision()
        assert plain.revision == general.revision
        assert plain_tables._data == general_tables._data


def test_only_plain_puts_take_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[bytes] = []
    plain_put = MvccStore._plain_put

    def counted(self: MvccStore, key: bytes, value: bytes):
        taken.append(key)
        return plain_put(self, key, value)

    monkeypatch.setattr(MvccStore, "_plain_put", counted)
    tables = MemoryTables()
    leases = TableLeases(tables)
    store = MvccStore(tables, leases=leases)
    lease_ops.grant(store, leases, LeaseGrantRequest(ID=1, TTL=5))
    store.put(PutRequest(key=b"a", value=b"1"))
    store.put(PutRequest(key=b"b", value=b"1", lease=1))
    store.put(PutRequest(key=b"c", value=b"1", prev_kv=True))
    store.put(PutRequest(key=b"a", ignore_value=True))
    with pytest.raises(errors.EmptyKey):
        store.put(PutRequest(key=b"", value=b"1"))
    store.put(PutRequest(key=b"b", value=b"2"))  # detaches b from lease 1
    assert taken == [b"a", b"b"]
    assert leases.keys(1) == []
    replica = MvccStore(MemoryTables(), prev_kv_in_events=True)
    replica.put(PutRequest(key=b"a", value=b"1"))
    assert taken == [b"a", b"b"]  # its events carry prev_kv: the general path
