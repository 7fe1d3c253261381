"""etcd's alarms as replicated state: the alarm table, and the state machine
refusing the writes that grow the db while NOSPACE is active (deletes,
compaction, lease revokes and disarming still apply), on every node alike."""

from __future__ import annotations

from dkv.alarms import AlarmReader, AlarmTable, grows_db
from dkv.commands import RequestId, encode, encode_delete, encode_put
from dkv.mvcc import MvccView
from dkv.mvcc.errors import NoSpace
from dkv.pb.etcd_rpc_pb2 import (
    NOSPACE,
    AlarmMember,
    AlarmRequest,
    CompactionRequest,
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
from dkv.storage.overlay import Overlay
from dkv.storage.tables import MemoryTables

ACTIVATE = AlarmRequest(action=AlarmRequest.ACTIVATE, memberID=7, alarm=NOSPACE)
DEACTIVATE = AlarmRequest(action=AlarmRequest.DEACTIVATE, memberID=7, alarm=NOSPACE)


def test_table_activates_lists_and_deactivates() -> None:
    tables = MemoryTables()
    table = AlarmTable(tables)
    assert not table.active() and list(table.all()) == []
    assert list(table.apply(ACTIVATE).alarms) == [AlarmMember(memberID=7, alarm=NOSPACE)]
    table.apply(AlarmRequest(action=AlarmRequest.ACTIVATE, memberID=3, alarm=NOSPACE))
    assert AlarmReader(tables).active()
    listed = table.apply(AlarmRequest(action=AlarmRequest.GET))
    assert [a.memberID for a in listed.alarms] == [3, 7]
    assert [a.memberID for a in table.apply(AlarmRequest(action=AlarmRequest.GET, memberID=7)).alarms] == [7]
    assert list(table.apply(DEACTIVATE).alarms) == [AlarmMember(memberID=7, alarm=NOSPACE)]
    assert list(table.apply(DEACTIVATE).alarms) == []  # not active: nothing to clear
    assert [a.memberID for a in table.all()] == [3]
    table.apply(AlarmRequest(action=AlarmRequest.DEACTIVATE, memberID=3, alarm=NOSPACE))
    assert not table.active()


def test_alarm_none_changes_nothing() -> None:
    tables = MemoryTables()
    assert list(AlarmTable(tables).apply(AlarmRequest(action=AlarmRequest.ACTIVATE, memberID=1)).alarms) == []
    assert not AlarmReader(tables).active()


def test_an_unknown_alarm_type_or_action_applies_as_nothing() -> None:
    """Applying never fails (a failure would stop every member): an alarm
    type or action that does not exist changes nothing. (The API refuses
    them before they are proposed: schemathesis sent alarm -509 and action
    581461, and applying raised struct.error.)"""
    tables = MemoryTables()
    table = AlarmTable(tables)
    for request in (
        AlarmRequest(action=AlarmRequest.ACTIVATE, memberID=6, alarm=-509),  # type: ignore[arg-type]
        AlarmRequest(action=AlarmRequest.ACTIVATE, memberID=6, alarm=99),  # type: ignore[arg-type]
        AlarmRequest(action=581461, memberID=6, alarm=NOSPACE),  # type: ignore[arg-type]
    ):
        assert list(table.apply(request).alarms) == []
    assert not table.active()


def test_which_writes_grow_the_db() -> None:
    put = RequestOp(request_put=PutRequest(key=b"k"))
    delete = RequestOp(request_delete_range=DeleteRangeRequest(key=b"k"))
    assert grows_db("put", PutRequest()) and grows_db("lease_grant", LeaseGrantRequest())
    assert grows_db("txn", TxnRequest(failure=[delete, put]))
    assert grows_db("txn", TxnRequest(success=[RequestOp(request_txn=TxnRequest(success=[put]))]))
    assert not grows_db("txn", TxnRequest(success=[delete]))
    for op in ("delete_range", "compaction", "lease_revoke", "alarm", "user_add"):
        assert not grows_db(op, None)


def _entry(index: int, data: bytes) -> Entry:
    return Entry(index, 1, EntryKind.NORMAL, data)


def _apply(tables: MemoryTables, entries: list[Entry]):
    outcome = apply_entries(entries, Overlay().writer(tables))
    apply_writes(tables, outcome.applied.writes)
    return outcome


def test_state_machine_refuses_growing_writes_while_nospace_is_active() -> None:
    tables = MemoryTables()
    _apply(
        tables, [_entry(1, encode_put(RequestId(1, 1), b"a", b"1")), _entry(2, encode_put(RequestId(1, 2), b"b", b"2"))]
    )
    _apply(tables, [_entry(3, encode(RequestId(1, 3), LeaseGrantRequest(ID=5, TTL=60)))])
    outcome = _apply(
        tables,
        [
            _entry(4, encode(RequestId(2, 1), ACTIVATE)),
            _entry(5, encode_put(RequestId(2, 2), b"c", b"3")),
            _entry(6, encode(RequestId(2, 3), TxnRequest(success=[RequestOp(request_put=PutRequest(key=b"d"))]))),
            _entry(7, encode(RequestId(2, 4), LeaseGrantRequest(ID=6, TTL=60))),
            _entry(8, encode_delete(RequestId(2, 5), b"a")),
            _entry(
                9,
                encode(
                    RequestId(2, 6), TxnRequest(success=[RequestOp(request_delete_range=DeleteRangeRequest(key=b"b"))])
                ),
            ),
            _entry(10, encode(RequestId(2, 7), CompactionRequest(revision=3))),
            _entry(11, encode(RequestId(2, 8), LeaseRevokeRequest(ID=5))),
        ],
    )
    results = dict(outcome.results)
    assert outcome.alarms_changed
    for seq in (2, 3, 4):
        assert isinstance(results[RequestId(2, seq)], NoSpace)
    assert results[RequestId(2, 5)].deleted == 1
    assert results[RequestId(2, 6)].succeeded
    assert not isinstance(results[RequestId(2, 7)], Exception)
    assert not isinstance(results[RequestId(2, 8)], Exception)
    assert outcome.leases_granted == () and outcome.leases_revoked == (5,)
    view = MvccView(tables)
    assert view.range(RangeRequest(key=b"\0", range_end=b"\0")).count == 0
    # disarmed: writes apply again
    outcome = _apply(
        tables,
        [_entry(12, encode(RequestId(3, 1), DEACTIVATE)), _entry(13, encode_put(RequestId(3, 2), b"c", b"3"))],
    )
    assert MvccView(tables).range(RangeRequest(key=b"c")).count == 1
    assert not AlarmReader(tables).active()


def test_a_refused_keyed_write_is_not_remembered() -> None:
    """A NoSpace refusal is not an outcome: a retry with the same key after
    disarm applies the write."""
    from dkv.commands import Idempotency

    tables = MemoryTables()
    key = Idempotency(b"key-1", 60.0)
    _apply(
        tables, [_entry(1, encode(RequestId(1, 1), ACTIVATE)), _entry(2, encode_put(RequestId(1, 2), b"k", b"v", key))]
    )
    outcome = _apply(
        tables,
        [_entry(3, encode(RequestId(1, 3), DEACTIVATE)), _entry(4, encode_put(RequestId(1, 4), b"k", b"v", key))],
    )
    assert dict(outcome.results)[RequestId(1, 4)].header.revision == 2


def test_dkvctl_alarm_prints_and_disarms_as_etcdctl() -> None:
    from dkv.ctl_etcd import _disarm, alarm_lines

    listed = {"alarms": [{"memberID": "7", "alarm": "NOSPACE"}, {"memberID": "9", "alarm": "NOSPACE"}]}
    assert alarm_lines(listed) == ["memberID:7 alarm:NOSPACE ", "memberID:9 alarm:NOSPACE "]
    assert alarm_lines({"header": {}}) == []
    calls = []

    def call(path: str, body: dict) -> dict:
        calls.append((path, body))
        if not body:
            return listed
        return {"alarms": [{"memberID": body["memberID"], "alarm": body["alarm"]}]}

    assert _disarm(call) == listed
    assert calls[1:] == [
        ("/v3/maintenance/alarm", {"action": "DEACTIVATE", "memberID": "7", "alarm": "NOSPACE"}),
        ("/v3/maintenance/alarm", {"action": "DEACTIVATE", "memberID": "9", "alarm": "NOSPACE"}),
    ]


def test_an_alarm_entry_takes_effect_for_the_entries_after_it_in_the_same_batch() -> None:
    """The state machine reads the alarms once per batch: an alarm entry
    must make it read them again, in either direction."""
    tables = MemoryTables()
    outcome = _apply(
        tables,
        [
            _entry(1, encode_put(RequestId(1, 1), b"a", b"1")),
            _entry(2, encode(RequestId(1, 2), ACTIVATE)),
            _entry(3, encode_put(RequestId(1, 3), b"b", b"2")),
            _entry(4, encode(RequestId(1, 4), DEACTIVATE)),
            _entry(5, encode_put(RequestId(1, 5), b"c", b"3")),
            _entry(6, encode(RequestId(1, 6), ACTIVATE)),
            _entry(7, encode(RequestId(1, 7), LeaseGrantRequest(ID=5, TTL=60))),
        ],
    )
    results = dict(outcome.results)
    assert not isinstance(results[RequestId(1, 1)], Exception)
    assert isinstance(results[RequestId(1, 3)], NoSpace)
    assert not isinstance(results[RequestId(1, 5)], Exception)
    assert isinstance(results[RequestId(1, 7)], NoSpace)
    keys = MvccView(tables).range(RangeRequest(key=b"\0", range_end=b"\0")).kvs
    assert [kv.key for kv in keys] == [b"a", b"c"]
