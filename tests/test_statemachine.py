"""The state machine: committed entries in, etcd's store applied through the
overlay, answers and events out; deterministic, and skipping what is not a
command on every node alike."""

from __future__ import annotations

from dkv.commands import RequestId, decode, encode, encode_delete, encode_put
from dkv.mvcc import MvccView
from dkv.mvcc.errors import FutureRevision
from dkv.pb.etcd_rpc_pb2 import CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest
from dkv.raft.messages import Entry, EntryKind
from dkv.statemachine import apply_entries
from dkv.storage import apply_writes
from dkv.storage.overlay import Overlay
from dkv.storage.tables import MemoryTables


def test_commands_round_trip() -> None:
    cmd = decode(encode_put(RequestId(1, 2), b"k", b"v"))
    assert (cmd.origin, cmd.seq, cmd.put.key, cmd.put.value) == (1, 2, b"k", b"v")
    cmd = decode(encode_delete(RequestId(3, 4), b"k"))
    assert cmd.WhichOneof("op") == "delete_range" and cmd.delete_range.key == b"k"
    txn = TxnRequest(success=[RequestOp(request_put=PutRequest(key=b"a", value=b"b"))])
    assert decode(encode(RequestId(5, 6), txn)).txn == txn


ENTRIES = [
    Entry(1, 1, EntryKind.CONFIG, b"whatever"),
    Entry(2, 2, EntryKind.NORMAL, b""),
    Entry(3, 2, EntryKind.NORMAL, encode_put(RequestId(9, 1), b"k", b"1")),
    Entry(4, 2, EntryKind.NORMAL, b"\xff\xff not a command"),
    Entry(5, 2, EntryKind.NORMAL, encode_put(RequestId(9, 2), b"k", b"2")),
    Entry(6, 2, EntryKind.NORMAL, encode_delete(RequestId(8, 1), b"j")),
    Entry(7, 2, EntryKind.NORMAL, encode(RequestId(8, 2), CompactionRequest(revision=99))),
    Entry(
        8,
        2,
        EntryKind.NORMAL,
        encode(
            RequestId(8, 3),
            TxnRequest(
                compare=[Compare(key=b"k", target=Compare.VALUE, result=Compare.EQUAL, value=b"2")],
                success=[RequestOp(request_put=PutRequest(key=b"j", value=b"3"))],
            ),
        ),
    ),
]


def _apply(entries):
    tables = MemoryTables()
    outcome = apply_entries(entries, Overlay().writer(tables))
    apply_writes(tables, outcome.applied.writes)
    return tables, outcome


def test_entries_apply_in_order_and_answer_each_request() -> None:
    tables, outcome = _apply(ENTRIES)
    assert outcome.applied.index == 8
    ids = [rid for rid, _ in outcome.results]
    assert ids == [RequestId(9, 1), RequestId(9, 2), RequestId(8, 1), RequestId(8, 2), RequestId(8, 3)]
    results = dict(outcome.results)
    assert results[RequestId(9, 1)].header.revision == 2 and results[RequestId(9, 2)].header.revision == 3
    assert results[RequestId(8, 1)].deleted == 0  # j was absent: no new revision
    assert isinstance(results[RequestId(8, 2)], FutureRevision)  # refused alike on every node
    assert results[RequestId(8, 3)].succeeded and results[RequestId(8, 3)].header.revision == 4
    view = MvccView(tables)
    assert view.revision == 4
    assert [(kv.key, kv.value) for kv in view.range(RangeRequest(key=b"\0", range_end=b"\0")).kvs] == [
        (b"j", b"3"),
        (b"k", b"2"),
    ]
    assert [e.kv.key for e in outcome.events] == [b"k", b"k", b"j"]


def test_applying_is_deterministic() -> None:
    first, a = _apply(ENTRIES)
    second, b = _apply(ENTRIES)
    assert a.applied == b.applied and [r for r, _ in a.results] == [r for r, _ in b.results]
    for name in first.tables():
        assert list(first.scan(name)) == list(second.scan(name))
