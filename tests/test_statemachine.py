"""The state machine: committed entries in, etcd's store applied through the
overlay, answers and events out; deterministic, and skipping what is not a
command on every node alike."""

from __future__ import annotations

from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from dkv.alarms import AlarmReader
from dkv.commands import Idempotency, RequestId, decode, encode, encode_delete, encode_put, stamp
from dkv.idempotency import stored_log_time_ms
from dkv.mvcc import MvccView
from dkv.mvcc.errors import FutureRevision
from dkv.mvcc.layout import META, REVISION, read_counter
from dkv.pb.etcd_rpc_pb2 import (
    AlarmRequest,
    AlarmType,
    CompactionRequest,
    Compare,
    DeleteRangeRequest,
    LeaseGrantRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
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


def test_a_batch_writes_the_store_revision_once() -> None:
    """The revision moves with each write; the table gets it at the batch's end."""
    puts = [Entry(i, 1, EntryKind.NORMAL, encode_put(RequestId(9, i), b"k%d" % i, b"v")) for i in range(1, 6)]
    tables, outcome = _apply(puts)
    assert [r.header.revision for _, r in outcome.results] == [2, 3, 4, 5, 6]
    assert sum(1 for w in outcome.applied.writes if w[:2] == (META, REVISION)) == 1
    assert read_counter(tables, REVISION) == MvccView(tables).revision == 6


def test_applying_is_deterministic() -> None:
    first, a = _apply(ENTRIES)
    second, b = _apply(ENTRIES)
    assert a.applied == b.applied and [r for r, _ in a.results] == [r for r, _ in b.results]
    for name in first.tables():
        assert list(first.scan(name)) == list(second.scan(name))


# -- a batch's carry ------------------------------------------------------------------------

_KEYS = [b"a", b"b", b"c"]
_IDEM_KEYS = [b"k1", b"k2", b"k3"]


@st.composite
def _commands(draw: st.DrawFn) -> list[bytes]:
    """Stamped commands of every kind that reads or moves what a carry holds:
    writes (some with idempotency keys, windows shorter than the stamps'
    steps), compactions (some refused), the NOSPACE alarm, lease grants."""
    out: list[bytes] = []
    now = draw(st.integers(0, 50))
    for seq in range(draw(st.integers(1, 30))):
        rid = RequestId(7, seq + 1)
        kind = draw(st.sampled_from(["put", "put", "delete", "txn", "compact", "alarm", "lease"]))
        idem = None
        if draw(st.booleans()):
            idem = Idempotency(draw(st.sampled_from(_IDEM_KEYS)), draw(st.sampled_from([0.005, 0.02, 1.0])))
        if kind == "put":
            request: object = PutRequest(key=draw(st.sampled_from(_KEYS)), value=draw(st.binary(max_size=3)))
        elif kind == "delete":
            request = DeleteRangeRequest(key=draw(st.sampled_from(_KEYS)))
        elif kind == "txn":
            request = TxnRequest(
                compare=[Compare(key=b"a", target=Compare.VERSION, result=Compare.GREATER, version=0)],
                success=[RequestOp(request_put=PutRequest(key=b"b", value=b"t"))],
                failure=[RequestOp(request_delete_range=DeleteRangeRequest(key=b"c"))],
            )
        elif kind == "compact":
            request = CompactionRequest(revision=draw(st.integers(0, 12)))
        elif kind == "alarm":
            action = draw(st.sampled_from([AlarmRequest.ACTIVATE, AlarmRequest.DEACTIVATE]))
            request = AlarmRequest(action=action, memberID=1, alarm=AlarmType.NOSPACE)
        else:
            request = LeaseGrantRequest(ID=draw(st.integers(1, 3)), TTL=10)
        now += draw(st.sampled_from([0, 1, 3, 8, 25]))
        out.append(stamp(encode(rid, request, idem), now))  # type: ignore[arg-type]
    return out


def _tables_of(tables: MemoryTables) -> dict[str, list[tuple[bytes, bytes]]]:
    return {name: list(tables.scan(name)) for name in tables.tables()}


def _answer(result: object) -> object:
    return result.SerializeToString(deterministic=True) if isinstance(result, Message) else repr(result)


@settings(max_examples=150, deadline=None)
@given(_commands(), st.lists(st.integers(1, 6), min_size=1, max_size=30))
def test_a_carry_changes_no_answer_and_no_write(commands: list[bytes], cuts: list[int]) -> None:
    """Batches given the previous batch's carry answer and write as batches
    that read everything from the tables, and each carry says what the
    tables then hold."""
    entries = [Entry(i + 1, 1, EntryKind.NORMAL, data) for i, data in enumerate(commands)]
    batches: list[list[Entry]] = []
    at = 0
    for size in cuts * len(entries):
        if at >= len(entries):
            break
        batches.append(entries[at : at + size])
        at += size
    carried, fresh = MemoryTables(), MemoryTables()
    carry = None
    for batch in batches:
        with_carry = apply_entries(batch, Overlay().writer(carried), carry)
        without = apply_entries(batch, Overlay().writer(fresh))
        assert [(rid, _answer(r)) for rid, r in with_carry.results] == [(rid, _answer(r)) for rid, r in without.results]
        assert with_carry.applied == without.applied
        apply_writes(carried, with_carry.applied.writes)
        apply_writes(fresh, without.applied.writes)
        carry = with_carry.carry
        assert carry is not None
        view = MvccView(carried)
        assert carry.counters == (view.revision, view.compact_revision)
        assert carry.log_time.now_ms == stored_log_time_ms(carried)
        assert carry.nospace in (None, AlarmReader(carried).active())
    assert _tables_of(carried) == _tables_of(fresh)
