# test-case-name: tests.test_alarms
"""etcd's alarms, as replicated state: which member raised which alarm.

A member raises ``NOSPACE`` when its db passes the space quota
(``dkv.quota``) by proposing etcd's ``AlarmRequest`` ACTIVATE through the
log; ``alarm disarm`` proposes a DEACTIVATE for each listed alarm. Every
member applies them to one small table of the state, so alarms survive a
restart and ride in snapshots like the other tables:

``alarm.members`` -- key: the member id (u64, big-endian) + the alarm type
    (u32, big-endian); value: empty.

While any member's NOSPACE alarm is active the state machine refuses the
writes that grow the db (``grows_db``) with etcd's ``NoSpace``, on every
member alike; reads, deletes, compaction, lease revokes and alarms still
go through. Deterministic: the answers depend only on the replicated state.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dkv.pb.etcd_rpc_pb2 import CORRUPT, NOSPACE, AlarmMember, AlarmRequest, AlarmResponse, TxnRequest

if TYPE_CHECKING:
    from dkv.storage.tables import Tables, WritableTables

ALARMS = "alarm.members"
_KEY = struct.Struct(">QI")
#: The alarm types there are (etcd's AlarmType without NONE).
KNOWN_ALARMS = frozenset({NOSPACE, CORRUPT})


class AlarmReader:
    """The alarms as ``tables`` (a read-only view) holds them."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    def all(self) -> Iterator[AlarmMember]:
        """Every active alarm, by member id then type."""
        for key, _ in self._tables.scan(ALARMS):
            member, alarm = _KEY.unpack(key)
            yield AlarmMember(memberID=member, alarm=alarm)

    def active(self, alarm: int = NOSPACE) -> bool:
        """Whether any member has alarm active."""
        return any(a.alarm == alarm for a in self.all())


class AlarmTable(AlarmReader):
    """The alarms over writable tables: apply etcd's AlarmRequest."""

    def __init__(self, tables: WritableTables) -> None:
        super().__init__(tables)
        self._writable = tables

    def apply(self, request: AlarmRequest) -> AlarmResponse:
        """etcd's answers: ACTIVATE records the alarm and answers it;
        DEACTIVATE removes it and answers it if it was active (else an empty
        list); GET lists every alarm (memberID 0 and alarm NONE: all)."""
        response = AlarmResponse()
        if request.action == AlarmRequest.GET:
            response.alarms.extend(
                a for a in self.all() if request.memberID in (0, a.memberID) and request.alarm in (0, a.alarm)
            )
            return response
        if request.alarm not in KNOWN_ALARMS or request.action not in (AlarmRequest.ACTIVATE, AlarmRequest.DEACTIVATE):
            # NONE is no alarm, and an unknown type or action is nothing to
            # raise or clear (the API refuses them first; applying must never fail)
            return response
        key = _KEY.pack(request.memberID, request.alarm)
        member = AlarmMember(memberID=request.memberID, alarm=request.alarm)
        if request.action == AlarmRequest.ACTIVATE:
            self._writable.put(ALARMS, key, b"")
            response.alarms.append(member)
        elif request.action == AlarmRequest.DEACTIVATE and self._tables.get(ALARMS, key) is not None:
            self._writable.delete(ALARMS, key)
            response.alarms.append(member)
        return response


def txn_puts(request: TxnRequest) -> bool:
    """Whether a txn holds a put in either branch (nested txns included)."""
    for op in (*request.success, *request.failure):
        kind = op.WhichOneof("request")
        if kind == "request_put" or (kind == "request_txn" and txn_puts(op.request_txn)):
            return True
    return False


def grows_db(op: str, request: object) -> bool:
    """Whether the command field op (holding request) is a write that grows
    the db, which a NOSPACE alarm refuses (etcd's capped applier: Put, a Txn
    with a put, LeaseGrant)."""
    if op in ("put", "lease_grant"):
        return True
    return op == "txn" and isinstance(request, TxnRequest) and txn_puts(request)
