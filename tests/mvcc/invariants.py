"""Consistency of the store's derived tables with its history."""

from __future__ import annotations

from dkv.mvcc.keys import index_key, parse_revision_key
from dkv.mvcc.layout import HISTORY, INDEX, LIVE
from dkv.mvcc.records import KeyState, decode_state, encode_state
from dkv.pb.etcd_kv_pb2 import KeyValue
from dkv.storage.tables import Tables


def check_derived_tables(tables: Tables) -> None:
    """The index holds exactly one entry per history record, saying what
    the record says; the live table holds the newest version of every key
    whose newest record is a put."""
    expected_index: dict[bytes, bytes] = {}
    newest: dict[bytes, tuple[bytes, bool]] = {}
    for rkey, data in tables.scan(HISTORY):
        main, sub = parse_revision_key(rkey)
        kv = KeyValue.FromString(data)
        assert kv.mod_revision == main
        if kv.create_revision == 0:
            state = KeyState(main, sub, tombstone=True)
        else:
            state = KeyState(main, sub, kv.create_revision, kv.version, kv.lease)
        expected_index[index_key(kv.key, main)] = encode_state(state)
        newest[kv.key] = (encode_state(state), state.tombstone)
    assert dict(tables.scan(INDEX)) == expected_index
    live = dict(tables.scan(LIVE))
    assert live == {key: state for key, (state, tombstone) in newest.items() if not tombstone}
    for data in live.values():
        assert not decode_state(data).tombstone
