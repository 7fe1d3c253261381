"""Leases in the replicated state: grant, attach through puts, revoke (all
keys deleted at one revision, with delete events), and persistence in the
state's tables (LMDB: what a restart reopens and a snapshot copies)."""

from __future__ import annotations

import tempfile

import lmdb

from dkv.commands import RequestId, encode
from dkv.mvcc import MvccView
from dkv.mvcc.errors import LeaseExists, LeaseNotFound
from dkv.mvcc.leases import LeaseReader, TableLeases
from dkv.pb.etcd_kv_pb2 import Event
from dkv.pb.etcd_rpc_pb2 import (
    DeleteRangeRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from dkv.raft.messages import Entry, EntryKind
from dkv.statemachine import apply_entries
from dkv.storage import apply_writes
from dkv.storage.lmdb_tables import LmdbTables
from dkv.storage.overlay import Overlay
from dkv.storage.tables import MemoryTables


def _entries(*requests, first: int = 1) -> list[Entry]:
    return [
        Entry(first + i, 1, EntryKind.NORMAL, encode(RequestId(1, first + i), r)) for i, r in enumerate(requests)
    ]


def _apply(tables, *requests, first: int = 1):
    outcome = apply_entries(_entries(*requests, first=first), Overlay().writer(tables))
    apply_writes(tables, outcome.applied.writes)
    return outcome, [r for _, r in outcome.results]


def _keys(tables) -> list[bytes]:
    return [kv.key for kv in MvccView(tables).range(RangeRequest(key=b"\0", range_end=b"\0")).kvs]


def test_grant_attach_and_revoke_deletes_every_key_at_one_revision() -> None:
    tables = MemoryTables()
    outcome, results = _apply(
        tables,
        LeaseGrantRequest(ID=7, TTL=10),
        PutRequest(key=b"a", value=b"1", lease=7),
        PutRequest(key=b"b", value=b"2", lease=7),
        PutRequest(key=b"c", value=b"3"),
        PutRequest(key=b"x", value=b"4", lease=99),
    )
    assert (results[0].ID, results[0].TTL, results[0].header.revision) == (7, 10, 1)
    assert isinstance(results[4], LeaseNotFound)  # unknown lease: refused, nothing written
    assert outcome.leases_granted == ((7, 10),)
    assert LeaseReader(tables).keys(7) == [b"a", b"b"]
    assert LeaseReader(tables).granted_ttl(7) == 10
    outcome, results = _apply(tables, LeaseRevokeRequest(ID=7), first=6)
    assert results[0].header.revision == 5  # one new revision for both deletes
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in outcome.events] == [
        (Event.DELETE, b"a", 5),
        (Event.DELETE, b"b", 5),
    ]
    assert outcome.leases_revoked == (7,)
    assert _keys(tables) == [b"c"]
    assert not LeaseReader(tables).exists(7) and list(LeaseReader(tables).all()) == []
    _, results = _apply(tables, LeaseRevokeRequest(ID=7), first=7)
    assert isinstance(results[0], LeaseNotFound)


def test_grant_of_an_existing_id_is_refused() -> None:
    tables = MemoryTables()
    _, results = _apply(tables, LeaseGrantRequest(ID=3, TTL=5), LeaseGrantRequest(ID=3, TTL=9))
    assert isinstance(results[1], LeaseExists)
    assert list(LeaseReader(tables).all()) == [(3, 5)]


def test_keys_detach_when_overwritten_deleted_or_moved_to_another_lease() -> None:
    tables = MemoryTables()
    _apply(
        tables,
        LeaseGrantRequest(ID=1, TTL=5),
        LeaseGrantRequest(ID=2, TTL=5),
        PutRequest(key=b"a", value=b"1", lease=1),
        PutRequest(key=b"b", value=b"1", lease=1),
        PutRequest(key=b"c", value=b"1", lease=1),
        PutRequest(key=b"a", value=b"2", lease=2),
        PutRequest(key=b"b", value=b"2"),
        DeleteRangeRequest(key=b"c"),
        TxnRequest(success=[RequestOp(request_put=PutRequest(key=b"d", value=b"1", lease=2))]),
    )
    reader = LeaseReader(tables)
    assert reader.keys(1) == [] and reader.keys(2) == [b"a", b"d"]
    _, results = _apply(tables, LeaseRevokeRequest(ID=1), first=10)
    assert results[0].header.revision == 8  # no keys: no new revision
    assert _keys(tables) == [b"a", b"b", b"d"]


def test_a_txn_put_with_an_unknown_lease_writes_nothing() -> None:
    tables = MemoryTables()
    _, results = _apply(
        tables, TxnRequest(success=[RequestOp(request_put=PutRequest(key=b"d", value=b"1", lease=5))])
    )
    assert isinstance(results[0], LeaseNotFound) and _keys(tables) == []


def test_leases_persist_in_the_state_database() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/state.db"
        env = lmdb.open(path, subdir=False, max_dbs=2, map_size=1 << 26)
        db = env.open_db(b"state")
        with env.begin(write=True) as txn:
            _apply(
                LmdbTables(txn, db),
                LeaseGrantRequest(ID=-5, TTL=30),
                LeaseGrantRequest(ID=1 << 62, TTL=60),
                PutRequest(key=b"k" * 600, value=b"long key", lease=1 << 62),
            )
        env.close()
        env = lmdb.open(path, subdir=False, max_dbs=2, map_size=1 << 26)
        db = env.open_db(b"state")
        with env.begin() as txn:
            reader = LeaseReader(LmdbTables(txn, db))
            assert sorted(reader.all()) == [(-5, 30), (1 << 62, 60)]
            assert reader.keys(1 << 62) == [b"k" * 600] and reader.keys(-5) == []
        env.close()


def test_forget_drops_leftover_key_records() -> None:
    tables = MemoryTables()
    leases = TableLeases(tables)
    leases.grant(4, 10)
    leases.attach(4, b"z")
    leases.forget(4)
    assert not leases.exists(4) and leases.keys(4) == []
