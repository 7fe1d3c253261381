# test-case-name: tests.test_quota
"""The db's space quota and etcd's NOSPACE alarm, on one node.

Before a write that grows the db (``dkv.alarms.grows_db``) is proposed, the
node compares the bytes its db has in use plus the request's size with
``--quota-backend-bytes`` (etcd's ``quotaKVServer``). Past the quota it
raises the alarm -- proposes etcd's ``AlarmRequest`` ACTIVATE NOSPACE for
itself, once, through the log -- and refuses the write with etcd's
``NoSpace``. Once the alarm is applied, every member refuses such writes
at apply (``dkv.statemachine``) until ``alarm disarm`` clears it; a write
that finds the db still over the quota raises it again.

A store that reports the disk full (``lmdb.MapFullError``, ENOSPC) makes
the driver hold its writes and retry them (``ReplicationService._stall``);
it tells the quota, which raises the alarm the same way, refuses the writes
that grow the db at once, and lists this member's NOSPACE alarm locally
(``alarms``, and so ``/health``) until a retry gets through, even while the
replicated alarm cannot commit (every member's disk full). The quota is
how dkv keeps from getting there (see the README, "Space quota and the
NOSPACE alarm").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred

from dkv.alarms import AlarmReader
from dkv.commands import encode
from dkv.errors import NoLeader
from dkv.logs import logger
from dkv.mvcc.errors import NoSpace
from dkv.pb.etcd_rpc_pb2 import NOSPACE, AlarmMember, AlarmRequest

if TYPE_CHECKING:
    from dkv.replication import ReplicationService

log = logger("dkv.quota")

#: How long a measure of the db's size in use serves (measuring costs tens
#: of microseconds); meanwhile the bytes of the writes let through are added
#: to it (twice: each lands in the log and in the state), and an estimate
#: past the quota is measured again before refusing.
MEASURE_SECONDS = 0.1


@attrs.define
class Quota:
    replication: ReplicationService
    #: (bytes of the db file, bytes in use): ``NodeStore.size``.
    size: Callable[[], tuple[int, int]]
    #: This member's id, as etcd's alarms name it.
    member_id: int
    quota_bytes: int
    _raising: bool = attrs.field(default=False, init=False)
    #: The last measure of the bytes in use, when it was taken, and the
    #: bytes of the writes let through since.
    _in_use: int = attrs.field(default=0, init=False)
    _measured_at: float | None = attrs.field(default=None, init=False)
    _since: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self.replication.disk_full_listeners.append(self._disk_full_changed)

    def _disk_full_changed(self, full: bool) -> None:
        if full and not self._raising and not self._mine_active():
            self._propose_alarm()

    def check(self, cost: int) -> None:
        """Raise NoSpace (and the alarm) if a write of cost bytes would take
        the db's bytes in use past the quota."""
        if self.replication.disk_full:
            self._disk_full_changed(True)  # the driver said why, in its one line
            raise NoSpace()
        if not self.replication.running:  # stopping: the store may be closed already
            raise NoLeader("node is shutting down")
        now = self.replication.clock.seconds()
        stale = self._measured_at is None or now - self._measured_at >= MEASURE_SECONDS
        if stale or self._in_use + self._since + cost > self.quota_bytes:
            self._in_use, self._measured_at, self._since = self.size()[1], now, 0
        if self._in_use + self._since + cost <= self.quota_bytes:
            self._since += 2 * cost  # a write lands twice: in the log and in the state
            return
        self._raise_alarm(self._in_use)
        raise NoSpace()

    def _raise_alarm(self, in_use: int) -> None:
        if self._raising or self._mine_active():
            return
        log.warn(
            "db space in use ({in_use} bytes) is past the quota ({quota} bytes): raising the NOSPACE alarm; "
            "writes that grow the db are refused until it is disarmed",
            in_use=in_use,
            quota=self.quota_bytes,
        )
        self._propose_alarm()

    def _propose_alarm(self) -> None:
        self._raising = True
        d = self.propose(AlarmRequest(action=AlarmRequest.ACTIVATE, memberID=self.member_id, alarm=NOSPACE))

        def done(result: Any) -> Any:
            self._raising = False
            return result

        d.addBoth(done).addErrback(
            lambda f: log.info("raising the NOSPACE alarm failed ({error}); the next write retries", error=f.value)
        )

    def _mine_active(self) -> bool:
        return any(a.memberID == self.member_id and a.alarm == NOSPACE for a in self._applied_alarms())

    def _applied_alarms(self) -> list[AlarmMember]:
        with self.replication.view() as state:
            return list(AlarmReader(state.tables).all())

    def alarms(self) -> list[AlarmMember]:
        """The active alarms in this node's applied state, and this member's
        NOSPACE while its disk is full (a local fact: it shows even before
        the replicated alarm is applied here, or if it never can be)."""
        alarms = self._applied_alarms()
        mine = AlarmMember(memberID=self.member_id, alarm=NOSPACE)
        if self.replication.disk_full and mine not in alarms:
            alarms.append(mine)
            alarms.sort(key=lambda a: (a.memberID, a.alarm))
        return alarms

    def nospace(self) -> bool:
        """Whether a NOSPACE alarm is active (this node's applied state)."""
        return any(a.alarm == NOSPACE for a in self.alarms())

    def propose(self, request: AlarmRequest) -> Deferred[Any]:
        """Propose an ACTIVATE or DEACTIVATE; fires with etcd's AlarmResponse
        once applied here."""
        rid = self.replication.next_request_id()
        return self.replication.propose(rid, encode(rid, request))
